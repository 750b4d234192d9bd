"""The metrics' naming rules, what each helper counts, the JSON log lines, the two new settings,
and the metrics/health HTTP server itself (a real server on a free port, real HTTP requests)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from ooma_moh import __version__, health, metrics
from ooma_moh.agi.route import decide
from ooma_moh.agi.server import FastAgiServer
from ooma_moh.app import open_catalog
from ooma_moh.ari.hold import HoldHandler
from ooma_moh.cli import main
from ooma_moh.config import Settings, load_settings
from ooma_moh.errors import (
    ConfigError,
    DisclaimerRequired,
    InvalidTenantId,
    ReloadPending,
    StorageError,
    UploadRejected,
)
from ooma_moh.logsafe import JsonFormatter, RedactingFormatter
from ooma_moh.rejections import Rejection
from ooma_moh.resolve import ClassResolver
from tests.unit.fake_ari import FakeAri, inline, resolver

#: every label any metric may have: fixed sets of values, never a tenant, channel or address
ALLOWED_LABELS = {"action", "outcome", "route", "reason", "event", "result", "version"}
CREDENTIAL = "omh_0123abcd_" + "S" * 30


def value(name: str, **labels: str) -> float:
    """A sample's current value (0 when the series does not exist yet)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def our_metrics() -> list[MetricWrapperBase]:
    return [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]


# -- naming ---------------------------------------------------------------------------------------


def test_every_metric_follows_the_naming_rules() -> None:
    families = list(text_string_to_metric_families(metrics.exposition().decode()))
    assert len(our_metrics()) >= 18 and len(families) >= len(our_metrics())
    for family in families:
        assert family.name.startswith("ooma_moh_"), family.name
        assert not any(unit in family.name.split("_") for unit in ("ms", "milliseconds", "minutes", "kb", "mb")), (
            family.name
        )
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= ALLOWED_LABELS, (sample.name, sample.labels)
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
    for metric in our_metrics():  # also the label names of series not created yet
        assert "tenant" not in metric._labelnames and set(metric._labelnames) <= ALLOWED_LABELS, metric
        assert metric._name.startswith("ooma_moh_"), metric._name
        if metric._type == "histogram":
            assert metric._name.endswith("_seconds"), metric._name


def test_counters_are_exposed_with_total_and_build_info_is_one() -> None:
    text = metrics.exposition().decode()
    assert "# TYPE ooma_moh_holds_total counter" in text
    assert "# TYPE ooma_moh_sync_runs_total counter" in text
    assert f'ooma_moh_build_info{{version="{__version__}"}} 1.0' in text
    assert value("ooma_moh_build_info", version=__version__) == 1.0


# -- what the helpers count -------------------------------------------------------------------------


def test_every_reason_the_resolvers_give_has_its_own_code(tmp_path: Path) -> None:
    catalog = open_catalog(Settings(home=tmp_path / "home"))
    real = ClassResolver(catalog, "tenant-")
    reasons = {real.resolve("nobody").reason, real.resolve("bad id!").reason, decide(None, "none", None).reason}
    catalog.close()
    reasons.add(real.resolve("after-close").reason)  # the catalog does not answer
    ari = FakeAri()
    hold_handler = HoldHandler(ari, resolver(set()), run_blocking=inline)
    reasons.add(asyncio.run(hold_handler._class_of(None)).reason)
    codes = {metrics.fallback_code(r) for r in reasons if r}
    assert codes == {"unknown_tenant", "invalid_tenant", "no_tenant", "catalog_unavailable"}
    assert metrics.fallback_code("tenant on default music") == "tenant_on_default"
    assert metrics.fallback_code("unknown route 'x\\ny'") == "unknown_route"
    assert metrics.fallback_code("a reason quoting tenant evil\n") == "other"


def test_hold_outcomes_and_the_latency_histogram() -> None:
    started, default, alone = (
        value("ooma_moh_holds_total", action=a, outcome=o)
        for a, o in (("started", "tenant"), ("started", "default"), ("alone", "no_music"))
    )
    count, total = value("ooma_moh_hold_to_music_seconds_count"), value("ooma_moh_hold_to_music_seconds_sum")
    metrics.hold("started", True, "tenant-acme", 0.02)
    metrics.hold("started", True, "default", 0.03)
    metrics.hold("alone", False, "tenant-acme", None)
    assert value("ooma_moh_holds_total", action="started", outcome="tenant") == started + 1
    assert value("ooma_moh_holds_total", action="started", outcome="default") == default + 1
    assert value("ooma_moh_holds_total", action="alone", outcome="no_music") == alone + 1
    assert value("ooma_moh_hold_to_music_seconds_count") == count + 2
    assert value("ooma_moh_hold_to_music_seconds_sum") == pytest.approx(total + 0.05)


def test_the_hold_handler_counts_its_decisions() -> None:
    """Over the fake ARI (the handler's logic; the lab test checks a real hold): a softmix hold
    of a tenant on file, then one of an unknown tenant."""
    before = {k: value("ooma_moh_holds_total", action="started", outcome=k) for k in ("tenant", "default")}
    unknown = value("ooma_moh_fallbacks_total", route="ari", reason="unknown_tenant")
    latencies = value("ooma_moh_hold_to_music_seconds_count")
    for tenant in ("acme", "ghost"):
        ari = FakeAri()
        hold_handler = HoldHandler(ari, resolver({"acme"}), run_blocking=inline)
        ari.channel("user", "PJSIP/acme-100-00000001", tenant=tenant)
        ari.channel("caller", "PJSIP/trunk-00000002")
        ari.bridge("b1", ["user", "caller"], "softmix")
        for cid in ("user", "caller"):
            asyncio.run(hold_handler.handle(ari.event("ChannelEnteredBridge", cid, "b1")))
        asyncio.run(hold_handler.handle(ari.event("ChannelHold", "user")))
    assert value("ooma_moh_holds_total", action="started", outcome="tenant") == before["tenant"] + 1
    assert value("ooma_moh_holds_total", action="started", outcome="default") == before["default"] + 1
    assert value("ooma_moh_fallbacks_total", route="ari", reason="unknown_tenant") == unknown + 1
    assert value("ooma_moh_hold_to_music_seconds_count") == latencies + 2


@pytest.mark.parametrize(
    "exc, result, reason",
    [
        (None, "ok", None),
        (UploadRejected(Rejection.TOO_LARGE, "big"), "rejected", "too_large"),
        (DisclaimerRequired("no"), "disclaimer_required", None),
        (StorageError("disk_full", "full"), "server_error", "disk_full"),
        (InvalidTenantId("bad"), "invalid", None),
        (RuntimeError("bug"), "server_error", None),
    ],
)
def test_upload_results(exc: Exception | None, result: str, reason: str | None) -> None:
    before = value("ooma_moh_uploads_total", result=result)
    rejected = value("ooma_moh_upload_rejections_total", reason="too_large")
    assert metrics.upload_done(exc) == (result, reason)
    assert value("ooma_moh_uploads_total", result=result) == before + 1
    assert value("ooma_moh_upload_rejections_total", reason="too_large") == rejected + (result == "rejected")


def test_sync_errors_and_success() -> None:
    assert metrics.sync_failed(ReloadPending("later")) == "reload_pending"
    assert metrics.sync_failed(StorageError("blob_missing", "gone")) == "blob_missing"
    assert metrics.sync_failed(ValueError("x")) == "error"
    metrics.sync_succeeded(7)
    assert value("ooma_moh_classes_published") == 7
    assert value("ooma_moh_sync_last_success_timestamp_seconds") > 1.7e9


def test_agi_durations_only_for_answered_requests() -> None:
    count = value("ooma_moh_agi_request_duration_seconds_count")
    timeouts = value("ooma_moh_agi_requests_total", result="timeout")
    metrics.agi_request("timeout", 5.0)
    metrics.agi_request("ok", 0.002)
    assert value("ooma_moh_agi_requests_total", result="timeout") == timeouts + 1
    assert value("ooma_moh_agi_request_duration_seconds_count") == count + 1


def test_catalog_probe_of_a_real_catalog(tmp_path: Path) -> None:
    catalog = open_catalog(Settings(home=tmp_path / "home"))
    server = FastAgiServer(ClassResolver(catalog, "tenant-"))
    assert asyncio.run(server.catalog_problem()) is None
    catalog.close()
    problem = asyncio.run(server.catalog_problem())  # no published classes here: default music
    assert isinstance(problem, health.Degraded) and "\n" not in problem, problem
    assert problem.startswith("holds hear default music: catalog unavailable"), problem


def test_catalog_probes_of_a_hung_catalog_do_not_pile_up() -> None:
    """Each /readyz used to queue one more read on the catalog's only thread: during a hang,
    probes every few seconds stacked up ahead of the requests that thread serves."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()
    reads: list[str] = []

    class HungCatalog:
        def endpoint_tenant(self, endpoint: str) -> None:
            reads.append(endpoint)
            release.wait(10)

    executor = ThreadPoolExecutor(1)
    # a catalog with only the method the probe reads, not the whole Catalog protocol
    probe = health.CatalogProbe.of(executor, HungCatalog(), timeout=0.05)  # type: ignore[arg-type]

    async def scenario() -> list[str | None]:
        answers = [await probe.problem() for _ in range(5)]
        release.set()
        await asyncio.wrap_future(executor.submit(lambda: None))  # the hung read has answered
        answers.append(await probe.problem())
        answers.append(await probe.problem())
        return answers

    answers = asyncio.run(scenario())
    executor.shutdown(wait=True)
    assert answers[:5] == ["catalog unreachable: no answer within 0.05 s"] * 5
    assert answers[5:] == [None, None]
    assert len(reads) == 3  # the hung one for the first five probes, then one per probe


# -- the HTTP server ---------------------------------------------------------------------------------


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_server_in_a_thread() -> None:
    problem: list[str | None] = ["not connected to anything yet"]
    port, stop = health.serve_in_thread(("127.0.0.1", 0), lambda: problem[0])
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/healthz")[::2] == (200, "ok\n")
        assert get(f"{base}/readyz")[::2] == (503, "not connected to anything yet\n")
        problem[0] = None
        assert get(f"{base}/readyz")[::2] == (200, "ready\n")
        status, content_type, body = get(f"{base}/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        assert f'ooma_moh_build_info{{version="{__version__}"}} 1.0' in body
        assert get(f"{base}/nothing")[0] == 404
    finally:
        stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_metrics_server_on_a_taken_port_is_a_one_line_error() -> None:
    port, stop = health.serve_in_thread(("127.0.0.1", 0), lambda: None)
    try:
        with pytest.raises(Exception, match=f"metrics_listen 127.0.0.1:{port}: cannot listen"):
            health.serve_in_thread(("127.0.0.1", port), lambda: None)
    finally:
        stop()


# -- settings and options ------------------------------------------------------------------------------


def test_metrics_listen_and_log_format_settings(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).metrics_address is None and Settings(home=tmp_path).log_format == "text"
    layered = load_settings(
        environ={
            "OOMA_MOH_HOME": str(tmp_path),
            "OOMA_MOH_METRICS_LISTEN": "0.0.0.0:9464",
            "OOMA_MOH_LOG_FORMAT": "json",
        }
    )
    assert layered.metrics_address == ("0.0.0.0", 9464) and layered.log_format == "json"
    with pytest.raises(ConfigError, match="metrics_listen"):
        Settings(home=tmp_path, metrics_listen="9464")
    with pytest.raises(ConfigError, match="log_format"):
        Settings(home=tmp_path, log_format="xml")


def test_long_running_commands_take_the_options(tmp_path: Path) -> None:
    for command in (["serve", "ari"], ["serve", "agi"], ["serve", "http"], ["agent"]):
        result = CliRunner().invoke(main, ["--home", str(tmp_path / "h"), *command, "--metrics-listen", "nope"])
        assert result.exit_code == 1 and "metrics_listen 'nope' must be HOST:PORT" in result.output, result.output
        result = CliRunner().invoke(main, ["--home", str(tmp_path / "h"), *command, "--log-format", "xml"])
        assert result.exit_code == 2 and "--log-format" in result.output
    assert not (tmp_path / "h").exists()


# -- log lines -----------------------------------------------------------------------------------------


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom with {CREDENTIAL}\nsecond line")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("ooma_moh.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_lines_are_one_object_per_line_and_redacted() -> None:
    line = JsonFormatter().format(record("hold tenant=%s token %s", "a\nb\x1b[2J\u2028", CREDENTIAL, exc=True))
    assert "\n" not in line and line.isascii()
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "exception"}
    assert entry["level"] == "WARNING" and entry["logger"] == "ooma_moh.test"
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2025-01-01T00:00:00.000Z")
    assert entry["message"] == "hold tenant=a\nb\x1b[2J\u2028 token omh_0123abcd_<secret>"
    assert "RuntimeError: boom with omh_0123abcd_<secret>" in entry["exception"] and "S" * 30 not in line
    assert "exception" not in json.loads(JsonFormatter().format(record("plain")))


def test_text_lines_are_redacted_too() -> None:
    line = RedactingFormatter().format(record("link %s", CREDENTIAL, exc=True))
    assert "omh_0123abcd_<secret>" in line and "S" * 30 not in line and " WARNING ooma_moh.test: link " in line


def test_setup_logging_json_in_a_real_process() -> None:
    code = (
        "import logging\nfrom ooma_moh.cli import setup_logging\nsetup_logging('json')\n"
        "log = logging.getLogger('ooma_moh.x')\nlog.info('one %s', 'line\\ntwo')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["message"] for e in entries] == ["one line\ntwo", "failed"] and len(lines) == 2
    assert entries[0]["level"] == "INFO" and "ZeroDivisionError" in entries[1]["exception"]
