"""``/metrics``, ``/healthz``, ``/readyz`` and the log lines of the long-running commands, read over
real HTTP from real processes: `serve ari` on the lab Asterisk (a real SIP hold), `serve agi`
(the test plays Asterisk's side of FastAGI), `serve http` (a real upload, converted and published).

Counts are read before and after, and must move by exactly what was done: each process is fresh,
so a count that moved twice for one hold, or not at all, fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ooma_moh.app import build_syncer
from ooma_moh.config import Settings
from ooma_moh.lab import LabAsterisk, free_port
from ooma_moh.lab.ari import AriHarness, Call
from ooma_moh.service import MohService
from tests.audio import tone
from tests.integration.conftest import settings_env, tones_heard, wait_for_port
from tests.integration.test_agi_protocol import FakeAsterisk
from tests.integration.test_http_api import new_token
from tests.postgres import PostgresServer

A = 440.0
T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``, parsed as Prometheus parses it."""
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """A metric summed over all its labels."""
    return sum(v for (n, _), v in samples.items() if n == name)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def json_log(path: Path) -> list[dict[str, str]]:
    """The log file as JSON lines: every line must be one object."""
    return [json.loads(line) for line in path.read_text().splitlines()]


class Gate:
    """A TCP forwarder in front of the lab Asterisk's HTTP port that can be shut (new connections
    refused, open ones cut) and opened again: `serve ari`'s way to Asterisk, under our control."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.is_open = False
        self.loop = asyncio.new_event_loop()
        self.pipes: set[asyncio.Task[None]] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gate", daemon=True)
        self.thread.start()
        self.server = self._call(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self.pipes.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self.pipes.discard(task)
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

        pumps = [asyncio.ensure_future(pump(reader, up_writer)), asyncio.ensure_future(pump(up_reader, writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            writer.close()
            up_writer.close()
            self.pipes.discard(task)

    def open(self) -> None:
        self.is_open = True

    def shut(self) -> None:
        async def cut() -> None:
            self.is_open = False
            for task in list(self.pipes):
                task.cancel()
            await asyncio.gather(*self.pipes, return_exceptions=True)

        self._call(cut())

    def close(self) -> None:
        self.shut()
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def start(settings: Settings, log: Path, *command: str) -> subprocess.Popen[bytes]:
    with open(log, "a") as log_file:  # a file, not a pipe nobody reads
        return subprocess.Popen(
            [sys.executable, "-m", "ooma_moh", *command], env=settings_env(settings), stderr=log_file
        )


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM: the command must end by itself, cleanly."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture
def gate(lab: LabAsterisk) -> Iterator[Gate]:
    instance = Gate(lab.http_port)
    yield instance
    instance.close()


@pytest.mark.parametrize("mode", ["realtime"])
def test_serve_ari_metrics_readiness_and_logs(
    lab: LabAsterisk,
    ari_lab: AriHarness,
    lab_settings: Settings,
    lab_service: MohService,
    gate: Gate,
    tmp_path: Path,
) -> None:
    lab_service.upload("alpha", tone(tmp_path / "a.wav", A, seconds=2), accept_disclaimer=True, accepted_by="tester")
    build_syncer(lab_settings, lab_service).run(None)
    settings = dataclasses.replace(lab_settings, ari_url=f"http://127.0.0.1:{gate.port}")
    port, log = free_port(), tmp_path / "serve-ari.log"
    proc = start(settings, log, "serve", "ari", "--metrics-listen", f"127.0.0.1:{port}", "--log-format", "json")
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/healthz") == (200, "ok\n")
        # Asterisk out of reach: alive, not ready, and it says why
        status, reason = get(f"{base}/readyz")
        assert status == 503 and "not connected to Asterisk" in reason and reason.count("\n") == 1, reason
        assert value(scrape(port), "ooma_moh_ari_connected") == 0.0

        gate.open()
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, "ready once Asterisk is reachable")
        assert get(f"{base}/readyz") == (200, "ready\n")
        before = scrape(port)
        assert value(before, "ooma_moh_ari_connected") == 1.0
        assert value(before, "ooma_moh_ari_reconnects_total") == 0.0

        # two real holds in recorded (softmix) bridges: the handler starts the music itself
        for done, (name, tenant) in enumerate((("metrics_alpha", "alpha"), ("metrics_nobody", "nobody"))):
            call = Call(ari_lab, lab, name, tenant, 4)
            call.record_bridge()
            call.at(1.0)
            call.hold()
            counted = total(before, "ooma_moh_holds_total") + done + 1
            wait_until(
                lambda: total(scrape(port), "ooma_moh_holds_total") >= counted,  # noqa: B023
                f"the hold of {name} counted",
            )
            call.at(2.5)
            call.unhold()
            windows = tones_heard(call.finish(), [A])
            assert (A in windows) == (tenant == "alpha"), windows
        after = scrape(port)
        assert (
            value(after, "ooma_moh_holds_total", action="started", outcome="tenant")
            == value(before, "ooma_moh_holds_total", action="started", outcome="tenant") + 1
        )
        assert (
            value(after, "ooma_moh_holds_total", action="started", outcome="default")
            == value(before, "ooma_moh_holds_total", action="started", outcome="default") + 1
        )
        assert total(after, "ooma_moh_holds_total") == total(before, "ooma_moh_holds_total") + 2
        assert (
            value(after, "ooma_moh_hold_to_music_seconds_count")
            == value(before, "ooma_moh_hold_to_music_seconds_count") + 2
        )
        assert (
            0
            < value(after, "ooma_moh_hold_to_music_seconds_sum") - value(before, "ooma_moh_hold_to_music_seconds_sum")
            < 2.0
        )
        assert (
            value(after, "ooma_moh_fallbacks_total", route="ari", reason="unknown_tenant")
            == value(before, "ooma_moh_fallbacks_total", route="ari", reason="unknown_tenant") + 1
        )
        assert total(after, "ooma_moh_fallbacks_total") == total(before, "ooma_moh_fallbacks_total") + 1
        assert not any(label == "tenant" for _, labels in after for label, _ in labels)

        # Asterisk lost and found again: not ready meanwhile, one reconnection counted
        gate.shut()
        wait_until(lambda: get(f"{base}/readyz")[0] == 503, "not ready once the connection is cut")
        assert value(scrape(port), "ooma_moh_ari_connected") == 0.0
        gate.open()
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, "ready again")
        again = scrape(port)
        assert value(again, "ooma_moh_ari_connected") == 1.0
        assert value(again, "ooma_moh_ari_reconnects_total") == 1.0
    finally:
        stop(proc, log)
    entries = json_log(log)
    holds = [e for e in entries if e["logger"] == "ooma_moh.ari.hold" and e["message"].startswith("hold action=")]
    assert len(holds) == 2, holds
    assert "action=started" in holds[0]["message"] and "tenant=alpha" in holds[0]["message"]
    assert "channel_id=" in holds[0]["message"] and "bridge=" in holds[0]["message"]
    assert 'fallback="unknown tenant"' in holds[1]["message"] and "class=default" in holds[1]["message"]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["level"] == "WARNING" and "ARI events connection failed" in e["message"] for e in entries)


def test_serve_agi_metrics_and_readiness(settings: Settings, tmp_path: Path) -> None:
    from ooma_moh.app import open_catalog

    open_catalog(settings).close()  # `ooma-moh init`
    agi_port, port, log = free_port(), free_port(), tmp_path / "serve-agi.log"
    proc = start(
        settings, log, "serve", "agi", "--listen", f"127.0.0.1:{agi_port}", "--metrics-listen", f"127.0.0.1:{port}"
    )
    try:
        wait_for_port(agi_port, proc)
        wait_for_port(port, proc)
        assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")  # the catalog answers
        assert value(scrape(port), "ooma_moh_agi_requests_total", result="ok") == 0.0
        values = FakeAsterisk(agi_port).run(args=("nobody",))
        assert values["OOMA_MOH_CLASS"] == "default"
        garbage = FakeAsterisk(agi_port)
        garbage.send("GET / HTTP/1.1\r\n\r\n")
        assert garbage.closed()
        wait_until(lambda: total(scrape(port), "ooma_moh_agi_requests_total") >= 2, "both connections counted")
        samples = scrape(port)
        assert value(samples, "ooma_moh_agi_requests_total", result="ok") == 1.0
        assert value(samples, "ooma_moh_agi_requests_total", result="bad_request") == 1.0
        assert value(samples, "ooma_moh_agi_request_duration_seconds_count") == 1.0
        assert value(samples, "ooma_moh_fallbacks_total", route="agi", reason="unknown_tenant") == 1.0
    finally:
        stop(proc, log)
    lines = [line for line in log.read_text().splitlines() if "agi moh tenant=" in line]
    assert len(lines) == 1 and "tenant=nobody" in lines[0] and "channel=PJSIP/trunk-00000001" in lines[0], lines
    assert "uniqueid=1.1" in lines[0] and "result=ok" in lines[0]


def test_serve_http_metrics_on_both_ports(settings: Settings, tmp_path: Path) -> None:
    token = new_token(settings, "--tenant", "acme")
    good = tone(tmp_path / "hold.mp3", A, 2, "mp3").read_bytes()
    http_port, port, log = free_port(), free_port(), tmp_path / "serve-http.log"
    proc = start(
        settings, log, "serve", "http", "--listen", f"127.0.0.1:{http_port}", "--metrics-listen", f"127.0.0.1:{port}"
    )
    started = time.time()
    try:
        wait_for_port(http_port, proc)
        wait_for_port(port, proc)
        api = f"http://127.0.0.1:{http_port}"
        assert get(f"{api}/readyz") == (200, "ready\n") and get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert json.loads(get(f"{api}/healthz")[1]) == {"status": "ok"}

        async def uploads() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{api}/api/v1/tenants/acme/moh"
            async with aiohttp.ClientSession(headers=headers) as session:
                for data, expected in ((b"not audio at all" * 64, 415), (good, 201)):
                    form = aiohttp.FormData()
                    form.add_field(
                        "file", io.BytesIO(data), filename="hold.mp3", content_type="application/octet-stream"
                    )
                    form.add_field("disclaimer", "accepted")
                    async with session.put(url, data=form) as r:
                        assert r.status == expected, await r.text()
                deadline = time.monotonic() + 60
                while True:
                    async with session.get(url) as r:
                        state = (await r.json())["status"]["state"]
                    if state == "live":
                        return
                    assert state in ("converting", "publishing") and time.monotonic() < deadline, state
                    await asyncio.sleep(0.05)

        asyncio.run(uploads())
        samples = scrape(http_port)
        assert value(samples, "ooma_moh_uploads_total", result="ok") == 1.0
        assert value(samples, "ooma_moh_uploads_total", result="rejected") == 1.0
        assert value(samples, "ooma_moh_upload_rejections_total", reason="unrecognised_format") == 1.0
        assert value(samples, "ooma_moh_upload_conversion_seconds_count") == 2.0
        assert value(samples, "ooma_moh_sync_runs_total") == 1.0
        assert total(samples, "ooma_moh_sync_errors_total") == 0.0
        assert value(samples, "ooma_moh_classes_published") == 1.0
        assert started <= value(samples, "ooma_moh_sync_last_success_timestamp_seconds") <= time.time()
        assert value(scrape(port), "ooma_moh_uploads_total", result="ok") == 1.0  # one registry, two ports
    finally:
        stop(proc, log)
    text = log.read_text()
    assert "upload tenant=acme result=rejected reason=unrecognised_format" in text
    assert text.count("upload tenant=acme result=ok sha256=") == 1
    assert text.count("sync scope=acme result=ok added=1") == 1
    assert "GET /metrics" not in text  # successful scrapes are not logged


def test_agent_metrics_and_readiness(settings: Settings, postgres: PostgresServer, tmp_path: Path) -> None:
    """The agent serves its endpoints from a thread of its own: ready after its first full sync;
    a change made meanwhile is synced on notification and counted."""
    from ooma_moh.app import build_service, create_catalog

    if not settings.database_url:  # the embedded run: the agent needs the shared catalog
        settings = dataclasses.replace(settings, database_url=postgres.database())
        create_catalog(settings)
    settings = dataclasses.replace(settings, node_id="metrics-node", agent_reconcile_s=3600.0)
    port, log = free_port(), tmp_path / "agent.log"
    proc = start(settings, log, "agent", "--metrics-listen", f"127.0.0.1:{port}", "--log-format", "json")
    try:
        wait_for_port(port, proc)
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n"), "ready after the first sync")
        first = scrape(port)
        assert value(first, "ooma_moh_classes_published") == 0.0
        assert value(first, "ooma_moh_agent_failures_total") == 0.0
        service = build_service(settings)
        try:
            service.upload("acme", tone(tmp_path / "a.wav", A, seconds=2), accept_disclaimer=True, accepted_by="tester")
        finally:
            service.catalog.close()
        wait_until(lambda: value(scrape(port), "ooma_moh_classes_published") == 1.0, "the change synced", 60)
        synced = scrape(port)
        assert value(synced, "ooma_moh_sync_runs_total") == value(first, "ooma_moh_sync_runs_total") + 1
        assert (
            value(synced, "ooma_moh_sync_last_success_timestamp_seconds")
            > value(first, "ooma_moh_sync_last_success_timestamp_seconds")
            > 0
        )
        assert total(synced, "ooma_moh_sync_errors_total") == 0.0
    finally:
        stop(proc, log)
    syncs = [e["message"] for e in json_log(log) if e["message"].startswith("sync scope=")]
    assert syncs[0].startswith("sync scope=all result=ok") and syncs[-1].startswith("sync scope=acme result=ok added=1")
