"""Prometheus metrics of ooma-moh, each defined once here, and the small HTTP server that shows
them (``/metrics``) with ``/healthz`` and ``/readyz`` for a long-running process
(``metrics_listen``; docs/operations.md).

Names follow Prometheus' rules: prefix ``ooma_moh_``, base units (seconds, bytes), counters end in
``_total``. No label ever holds a tenant, a channel or any other value from outside: every label
value comes from a fixed set defined in the code (actions, outcomes, reason codes), so a metric
has a bounded number of series however many tenants and calls there are. What identifies one
hold, request or sync goes to its log line instead.

The metrics live in :data:`REGISTRY`, one per process; a process that serves none (a CLI
command) simply counts into it unseen.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from . import __version__
from .errors import AsteriskError, DisclaimerRequired, OomaMohError, ReloadPending, StorageError, UploadRejected
from .logsafe import printable
from .model import DEFAULT_CLASS
from .publish import ClassTaken

if TYPE_CHECKING:
    from aiohttp import web

    from .storage import Catalog

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="ooma_moh", registry=REGISTRY)  # CPU, memory, open files, start time
#: the text exposition format every Prometheus reads (what generate_latest writes)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BUILD_INFO = Gauge("ooma_moh_build_info", "Always 1; the version of ooma-moh in this process.", ["version"],
                   registry=REGISTRY)
BUILD_INFO.labels(__version__).set(1)

# -- ARI hold handler (serve ari) -----------------------------------------------------------------
HOLDS = Counter("ooma_moh_holds_total", "Holds handled, by what the handler did (action: forwarded, corrected,"
                " started, conference, alone, joined-during-hold, resynced, missed-unhold) and what the held"
                " party hears (outcome: tenant, default, no_music).", ["action", "outcome"], registry=REGISTRY)
HOLD_TO_MUSIC = Histogram("ooma_moh_hold_to_music_seconds", "From Asterisk's ChannelHold to the tenant's music"
                          " playing (0 when Asterisk plays the preset class from the first frame).",
                          buckets=(0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=REGISTRY)
FALLBACKS = Counter("ooma_moh_fallbacks_total", "Calls given the default class instead of a tenant's, by route"
                    " (ari, agi) and reason (no_tenant, invalid_tenant, unknown_tenant, tenant_on_default,"
                    " catalog_unavailable, unknown_route, other).", ["route", "reason"], registry=REGISTRY)
ARI_EVENT_ERRORS = Counter("ooma_moh_ari_event_errors_total", "ARI events whose handling failed on an ARI"
                           " request (the channel gone, Asterisk erring), by event type.", ["event"],
                           registry=REGISTRY)
ARI_CONNECTED = Gauge("ooma_moh_ari_connected", "1 while the ARI events WebSocket is connected and resynced,"
                      " else 0.", registry=REGISTRY)
ARI_RECONNECTS = Counter("ooma_moh_ari_reconnects_total", "ARI events connections made after the first one.",
                         registry=REGISTRY)

# -- FastAGI (serve agi) ----------------------------------------------------------------------------
AGI_REQUESTS = Counter("ooma_moh_agi_requests_total", "FastAGI connections, by result (ok, bad_request,"
                       " timeout, hung_up, refused).", ["result"], registry=REGISTRY)
AGI_DURATION = Histogram("ooma_moh_agi_request_duration_seconds", "Time to answer one FastAGI request (result"
                         " ok), from the connection to the last command.",
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                         registry=REGISTRY)

# -- uploads (serve http, upload) -------------------------------------------------------------------
UPLOADS = Counter("ooma_moh_uploads_total", "Uploads, by result (ok, rejected, disclaimer_required, invalid,"
                  " server_error).", ["result"], registry=REGISTRY)
UPLOAD_REJECTIONS = Counter("ooma_moh_upload_rejections_total", "Uploads refused for the file itself, by"
                            " reason code (too_large, unrecognised_format, too_long, silent, ...).", ["reason"],
                            registry=REGISTRY)
CONVERSION = Histogram("ooma_moh_upload_conversion_seconds", "Time to validate and convert one upload with"
                       " ffmpeg, accepted or refused.", buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
                       registry=REGISTRY)

# -- sync (serve http, agent, sync) ----------------------------------------------------------------
SYNC_RUNS = Counter("ooma_moh_sync_runs_total", "Syncs run (dry runs not counted).", registry=REGISTRY)
SYNC_ERRORS = Counter("ooma_moh_sync_errors_total", "Syncs that failed, by reason (reload_pending, asterisk,"
                      " a storage reason code, error).", ["reason"], registry=REGISTRY)
SYNC_DURATION = Histogram("ooma_moh_sync_duration_seconds", "Time of one sync, failed ones included.",
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0), registry=REGISTRY)
SYNC_LAST_SUCCESS = Gauge("ooma_moh_sync_last_success_timestamp_seconds", "When the last sync succeeded (unix"
                          " time; 0: none yet in this process).", registry=REGISTRY)
CLASSES_PUBLISHED = Gauge("ooma_moh_classes_published", "Tenant classes published to this node's Asterisk after"
                          " the last successful sync.", registry=REGISTRY)

# -- agent -------------------------------------------------------------------------------------------
AGENT_INCOMPLETE_SYNCS = Counter(
    "ooma_moh_agent_incomplete_syncs_total", "Agent syncs that published what they could but left something"
    " undone, by reason (classes_refused: another application's realtime row holds a tenant's class;"
    " reload_pending: static mode, Asterisk not reloaded yet). Not failures: the agent goes on.",
    ["reason"], registry=REGISTRY)
AGENT_FAILURES = Counter("ooma_moh_agent_failures_total", "Times the agent lost the catalog or the object storage"
                         " and backed off (the node kept what it publishes).", registry=REGISTRY)

#: a resolver's or route's reason (text) -> its code, by how the text starts
_FALLBACK_CODES = (("no tenant", "no_tenant"), ("invalid tenant", "invalid_tenant"),
                   ("unknown tenant", "unknown_tenant"), ("tenant on default", "tenant_on_default"),
                   ("catalog unavailable", "catalog_unavailable"), ("unknown route", "unknown_route"))


def fallback_code(reason: str) -> str:
    """The bounded label value for a fallback ``reason`` (whose text may quote outside values)."""
    return next((code for start, code in _FALLBACK_CODES if reason.startswith(start)), "other")


def fallback(route: str, reason: str) -> None:
    """Count one call given ``default`` for ``reason``."""
    FALLBACKS.labels(route, fallback_code(reason)).inc()


def hold(action: str, hears_music: bool, moh_class: str, to_music_s: float | None) -> None:
    """Count one hold decision; ``to_music_s`` is observed when the action starts the music."""
    outcome = ("default" if moh_class == DEFAULT_CLASS else "tenant") if hears_music else "no_music"
    HOLDS.labels(action, outcome).inc()
    if to_music_s is not None:
        HOLD_TO_MUSIC.observe(to_music_s)


def agi_request(result: str, seconds: float) -> None:
    """Count one FastAGI connection; its duration is observed when it was answered (``ok``)."""
    AGI_REQUESTS.labels(result).inc()
    if result == "ok":
        AGI_DURATION.observe(seconds)


def upload_done(exc: BaseException | None) -> tuple[str, str | None]:
    """Count one finished upload (``exc`` None: accepted); returns (result, reason code)."""
    reason = None
    if exc is None:
        result = "ok"
    elif isinstance(exc, UploadRejected):
        result, reason = "rejected", exc.reason
        UPLOAD_REJECTIONS.labels(reason).inc()
    elif isinstance(exc, DisclaimerRequired):
        result = "disclaimer_required"
    elif isinstance(exc, StorageError):
        result, reason = "server_error", exc.reason
    elif isinstance(exc, OomaMohError) and isinstance(exc, ValueError):  # tenant id, who accepted
        result = "invalid"
    else:
        result = "server_error"
    UPLOADS.labels(result).inc()
    return result, reason


def sync_failed(exc: BaseException) -> str:
    """Count one failed sync; returns its reason code."""
    if isinstance(exc, ReloadPending):
        reason = "reload_pending"
    elif isinstance(exc, ClassTaken):
        reason = "classes_refused"
    elif isinstance(exc, StorageError):
        reason = exc.reason
    else:
        reason = "asterisk" if isinstance(exc, AsteriskError) else "error"
    SYNC_ERRORS.labels(reason).inc()
    return reason


def sync_succeeded(classes: int) -> None:
    """A sync finished: ``classes`` are now published."""
    SYNC_LAST_SUCCESS.set_to_current_time()
    CLASSES_PUBLISHED.set(classes)


def exposition() -> bytes:
    """The metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)


# -- /metrics, /healthz, /readyz ------------------------------------------------------------------
#: what makes the process not ready, as one line, or None when it is ready
Readiness = Callable[[], Awaitable[str | None]]

#: the endpoint the catalog probe looks up (never mapped: the read only proves the catalog answers)
_PROBE_ENDPOINT = "ooma-moh/readyz"


def probe_catalog(catalog: Catalog) -> str | None:
    """(blocking; in the thread that owns ``catalog``) None if it answers a read, else why not,
    on one line."""
    try:
        catalog.endpoint_tenant(_PROBE_ENDPOINT)
    except OomaMohError as exc:
        return "catalog unreachable: " + printable(exc, 200)
    return None


class CatalogProbe:
    """``/readyz``'s catalog check, run in the thread that owns ``catalog`` (``executor``). At most
    one read is in flight: while one is still waiting on a hung catalog, later probes wait on it
    too instead of queueing more reads ahead of the requests the thread serves."""

    def __init__(self, executor: Executor, catalog: Catalog, timeout: float = 5.0) -> None:
        self.executor, self.catalog, self.timeout = executor, catalog, timeout
        self._pending: asyncio.Future[str | None] | None = None

    async def problem(self) -> str | None:
        """None if the catalog answers a read within :attr:`timeout`, else why not."""
        loop = asyncio.get_running_loop()
        if self._pending is None or self._pending.done() or self._pending.get_loop() is not loop:
            self._pending = loop.run_in_executor(self.executor, probe_catalog, self.catalog)
        try:
            return await asyncio.wait_for(asyncio.shield(self._pending), self.timeout)
        except TimeoutError:
            return f"catalog unreachable: no answer within {self.timeout:g} s"


def metrics_response() -> web.Response:
    """``GET /metrics``."""
    from aiohttp import web

    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE})


def readiness_response(problem: str | None) -> web.Response:
    """``GET /readyz``: 200 ``ready``, or 503 and the reason."""
    from aiohttp import web

    return web.Response(text=f"{problem}\n" if problem else "ready\n", status=503 if problem else 200)


def make_app(ready: Readiness) -> web.Application:
    """The metrics and health application."""
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response()

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        return readiness_response(await ready())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def cannot_listen(setting: str, address: tuple[str, int], exc: OSError) -> OomaMohError:
    """The one-line error for a listener that cannot be opened on ``address`` (the port taken, a
    privileged port, a host name that does not resolve), naming the ``setting`` to change."""
    if exc.errno is not None and exc.errno > 0:
        reason = os.strerror(exc.errno).lower()  # asyncio's strerror repeats the address
    else:  # getaddrinfo's errors carry negative codes; their text is already short
        reason = exc.strerror or str(exc)
    return OomaMohError(f"{setting} {address[0]}:{address[1]}: cannot listen ({printable(reason, 200)})")


async def start_server(address: tuple[str, int], ready: Readiness) -> tuple[web.AppRunner, int]:
    """Serve the metrics application on ``address`` in the running loop; (runner, bound port).
    ``await runner.cleanup()`` stops it."""
    from aiohttp import web

    runner = web.AppRunner(make_app(ready), access_log=None)  # scrapes and probes are not worth a line each
    await runner.setup()
    try:
        await web.TCPSite(runner, *address).start()
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen("metrics_listen", address, exc) from None
    ports = [a[1] for a in runner.addresses if isinstance(a, tuple)]
    return runner, ports[0] if ports else address[1]


def serve_in_thread(address: tuple[str, int], ready: Callable[[], str | None]) -> tuple[int, Callable[[], None]]:
    """The metrics server for a process without an event loop (the agent): its own loop in a
    daemon thread. Returns the bound port and a function that stops it."""
    loop = asyncio.new_event_loop()
    started: Future[int] = Future()

    async def readiness() -> str | None:
        return ready()

    def main() -> None:
        try:
            runner, port = loop.run_until_complete(start_server(address, readiness))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(port)
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="ooma-moh-metrics", daemon=True)
    thread.start()
    port = started.result(30)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return port, stop
