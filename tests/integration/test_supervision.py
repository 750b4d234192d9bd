"""Under systemd (ooma_moh/deploy/systemd/, ``Type=notify``, ``WatchdogSec=``): every long-running process
says ``READY=1`` once it serves, pings the watchdog from its own loop, says ``STOPPING=1`` on
SIGTERM, lets what is in flight finish, and exits 0. systemd's notification socket is played by a
real AF_UNIX datagram socket; the processes are the real commands."""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from ooma_moh.config import Settings
from tests.audio import tone
from tests.integration.conftest import settings_env, wait_for_port

WATCHDOG_USEC = 300_000  # pings every 0.15 s


class Notifications:
    """The socket systemd would listen on; every datagram received, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []

    def wait_for(self, state: str, timeout: float = 30.0, count: int = 1) -> None:
        """Until ``count`` datagrams carrying the line ``state`` arrived (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while sum(state in d.splitlines() for d in self.received) < count:
            left = deadline - time.monotonic()
            assert left > 0, (state, self.received)
            self.sock.settimeout(left)
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


def command(settings: Settings, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Notifications, Path]:
    """``ooma-moh ARGS`` as systemd would start it (NOTIFY_SOCKET, WATCHDOG_USEC)."""
    notes = Notifications(tmp_path / f"notify-{len(list(tmp_path.glob('notify-*')))}")
    log = tmp_path / f"{args[-1]}.log"
    env = {**settings_env(settings), "NOTIFY_SOCKET": str(notes.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ooma_moh", *args], env=env, stderr=out, stdout=subprocess.DEVNULL
        )
    return proc, notes, log


def terminate(proc: subprocess.Popen[bytes], notes: Notifications, log: Path) -> None:
    """SIGTERM as ``systemctl stop`` sends it: STOPPING=1, then a clean exit 0."""
    proc.send_signal(signal.SIGTERM)
    notes.wait_for("STOPPING=1")
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    notes.close()


def run_cli(settings: Settings, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ooma_moh", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def initialised(settings: Settings) -> Settings:
    run_cli(settings, "init")
    return settings


@pytest.mark.parametrize("server", ["agi", "http"])
def test_server_says_ready_pings_the_watchdog_and_stops_cleanly(
    initialised: Settings, tmp_path: Path, server: str
) -> None:
    port = free_port()
    proc, notes, log = command(initialised, tmp_path, "serve", server, "--listen", f"127.0.0.1:{port}")
    try:
        notes.wait_for("READY=1")
        with socket.socket() as probe:  # READY means serving: it accepts at once
            assert probe.connect_ex(("127.0.0.1", port)) == 0
        notes.wait_for("WATCHDOG=1", count=3)  # the event loop keeps pinging
    finally:
        if proc.poll() is None:
            terminate(proc, notes, log)
    assert notes.received.index("READY=1") < notes.received.index("STOPPING=1")


def test_agent_says_ready_pings_the_watchdog_and_stops_cleanly(s3_settings: Settings, tmp_path: Path) -> None:
    proc, notes, log = command(s3_settings, tmp_path, "agent", "--node-id", "n1")
    try:
        notes.wait_for("READY=1")
        notes.wait_for("WATCHDOG=1", count=3)
    finally:
        if proc.poll() is None:
            terminate(proc, notes, log)


def test_sigterm_during_an_upload_lets_it_finish(initialised: Settings, tmp_path: Path) -> None:
    """``systemctl stop`` while an upload is being converted: the upload completes (its answer is
    201 and the tenant has the file), then the server exits 0."""
    token = run_cli(initialised, "tokens", "create", "--operator").strip().splitlines()[-1]
    port = free_port()
    proc, notes, log = command(initialised, tmp_path, "serve", "http", "--listen", f"127.0.0.1:{port}")
    data = tone(tmp_path / "long.mp3", 440, 60, "mp3").read_bytes()  # about a second of ffmpeg here
    url = f"http://127.0.0.1:{port}/api/v1/tenants/acme/moh"
    headers = {"Authorization": f"Bearer {token}"}

    async def scenario() -> tuple[int, float]:
        async with aiohttp.ClientSession(headers=headers) as session:
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(data), filename="long.mp3", content_type="application/octet-stream")
            form.add_field("disclaimer", "accepted")
            upload = asyncio.ensure_future(session.put(url, data=form))
            deadline = time.monotonic() + 30
            while True:  # until the server says it is converting this upload
                async with session.get(url) as r:
                    if (await r.json())["status"]["state"] == "converting":
                        break
                assert time.monotonic() < deadline and not upload.done(), "the upload never started converting"
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            async with await upload as response:
                await response.read()
                return response.status, time.monotonic() - sent

    try:
        notes.wait_for("READY=1")
        wait_for_port(port, proc)
        status, after_s = asyncio.run(scenario())
        notes.wait_for("STOPPING=1")
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notes.close()
    assert status == 201, log.read_text()[-3000:]
    shown = run_cli(initialised, "show", "acme")
    assert "long.mp3" in shown and "setting     file" in shown, shown
    print(f"upload answered {after_s:.2f} s after SIGTERM")
