"""Prometheus metrics of ooma-moh, each defined once here (served by :mod:`ooma_moh.health`;
docs/operations.md).

Names follow Prometheus' rules: prefix ``ooma_moh_``, base units (seconds, bytes), counters end in
``_total``. No label ever holds a tenant, a channel or any other value from outside: every label
value comes from a fixed set defined in the code (actions, outcomes, reason codes), so a metric
has a bounded number of series however many tenants and calls there are. What identifies one
hold, request or sync goes to its log line instead.

The metrics live in :data:`REGISTRY`, one per process; a process that serves none (a CLI
command) simply counts into it unseen.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from . import __version__
from .errors import sync_failure, upload_outcome
from .model import DEFAULT_CLASS

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="ooma_moh", registry=REGISTRY)  # CPU, memory, open files, start time
#: the text exposition format every Prometheus reads (what generate_latest writes)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BUILD_INFO = Gauge(
    "ooma_moh_build_info", "Always 1; the version of ooma-moh in this process.", ["version"], registry=REGISTRY
)
BUILD_INFO.labels(__version__).set(1)

# -- ARI hold handler (serve ari) -----------------------------------------------------------------
HOLDS = Counter(
    "ooma_moh_holds_total",
    "Holds handled, by what the handler did (action: forwarded, corrected,"
    " started, conference, alone, joined-during-hold, resynced, missed-unhold) and what the held"
    " party hears (outcome: tenant, default, no_music).",
    ["action", "outcome"],
    registry=REGISTRY,
)
HOLD_TO_MUSIC = Histogram(
    "ooma_moh_hold_to_music_seconds",
    "From Asterisk's ChannelHold to the tenant's music"
    " playing (0 when Asterisk plays the preset class from the first frame).",
    buckets=(0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "ooma_moh_fallbacks_total",
    "Calls given the default class instead of a tenant's, by route"
    " (ari, agi) and reason (no_tenant, invalid_tenant, unknown_tenant, tenant_on_default,"
    " catalog_unavailable, unknown_route, other).",
    ["route", "reason"],
    registry=REGISTRY,
)
HOLD_STATS_WRITES = Counter(
    "ooma_moh_hold_stats_writes_total",
    "Writes of hold statistics to the catalog (one a second at most), by result (ok, failed:"
    " kept and retried). Per-tenant figures live in the catalog, not here.",
    ["result"],
    registry=REGISTRY,
)
HOLD_STATS_UNWRITTEN = Gauge(
    "ooma_moh_hold_stats_unwritten",
    "Tenant-days of hold statistics counted but not yet written (the catalog did not answer).",
    registry=REGISTRY,
)
ARI_EVENT_ERRORS = Counter(
    "ooma_moh_ari_event_errors_total",
    "ARI events whose handling failed on an ARI request (the channel gone, Asterisk erring), by event type.",
    ["event"],
    registry=REGISTRY,
)
ARI_CONNECTED = Gauge(
    "ooma_moh_ari_connected", "1 while the ARI events WebSocket is connected and resynced, else 0.", registry=REGISTRY
)
ARI_RECONNECTS = Counter(
    "ooma_moh_ari_reconnects_total", "ARI events connections made after the first one.", registry=REGISTRY
)

# -- FastAGI (serve agi) ----------------------------------------------------------------------------
AGI_REQUESTS = Counter(
    "ooma_moh_agi_requests_total",
    "FastAGI connections, by result (ok, bad_request, timeout, hung_up, refused).",
    ["result"],
    registry=REGISTRY,
)
AGI_DURATION = Histogram(
    "ooma_moh_agi_request_duration_seconds",
    "Time to answer one FastAGI request (result ok), from the connection to the last command.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)

# -- uploads (serve http, upload) -------------------------------------------------------------------
UPLOADS = Counter(
    "ooma_moh_uploads_total",
    "Uploads, by result (ok, rejected, disclaimer_required, unauthorized, invalid, server_error).",
    ["result"],
    registry=REGISTRY,
)
#: every result :func:`.errors.upload_outcome` gives; each series exists at 0 from the start, since
#: an alert's increase() cannot see the first increment of a series that appears with it
UPLOAD_RESULTS = ("ok", "rejected", "disclaimer_required", "unauthorized", "invalid", "server_error")
for _result in UPLOAD_RESULTS:
    UPLOADS.labels(_result)
UPLOAD_REJECTIONS = Counter(
    "ooma_moh_upload_rejections_total",
    "Uploads refused for the file itself, by reason code (too_large, unrecognised_format, too_long, silent, ...).",
    ["reason"],
    registry=REGISTRY,
)
CONVERSION = Histogram(
    "ooma_moh_upload_conversion_seconds",
    "Time to validate and convert one upload with ffmpeg, accepted or refused.",
    buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)

# -- sync (serve http, agent, sync) ----------------------------------------------------------------
SYNC_RUNS = Counter("ooma_moh_sync_runs_total", "Syncs run (dry runs not counted).", registry=REGISTRY)
SYNC_ERRORS = Counter(
    "ooma_moh_sync_errors_total",
    "Syncs that failed, by reason (reload_pending, asterisk, a storage reason code, error).",
    ["reason"],
    registry=REGISTRY,
)
SYNC_DURATION = Histogram(
    "ooma_moh_sync_duration_seconds",
    "Time of one sync, failed ones included.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
SYNC_LAST_SUCCESS = Gauge(
    "ooma_moh_sync_last_success_timestamp_seconds",
    "When the last sync succeeded (unix time; 0: none yet in this process).",
    registry=REGISTRY,
)
CLASSES_PUBLISHED = Gauge(
    "ooma_moh_classes_published",
    "Tenant classes published to this node's Asterisk after the last successful sync.",
    registry=REGISTRY,
)

# -- agent -------------------------------------------------------------------------------------------
AGENT_INCOMPLETE_SYNCS = Counter(
    "ooma_moh_agent_incomplete_syncs_total",
    "Agent syncs that published what they could but left something"
    " undone, by reason (classes_refused: another application's realtime row holds a tenant's class;"
    " reload_pending: static mode, Asterisk not reloaded yet). Not failures: the agent goes on.",
    ["reason"],
    registry=REGISTRY,
)
AGENT_FAILURES = Counter(
    "ooma_moh_agent_failures_total",
    "Times the agent lost the catalog or the object storage and backed off (the node kept what it publishes).",
    registry=REGISTRY,
)
AGENT_READY = Gauge(
    "ooma_moh_agent_ready",
    "1 while the agent is ready (its /readyz answers 200: the first full sync done, not backing off,"
    " the last sync left nothing undone), else 0. Only the agent sets it: 0 in every other process.",
    registry=REGISTRY,
)

#: a resolver's or route's reason (text) -> its code, by how the text starts
_FALLBACK_CODES = (
    ("no tenant", "no_tenant"),
    ("invalid tenant", "invalid_tenant"),
    ("unknown tenant", "unknown_tenant"),
    ("tenant on default", "tenant_on_default"),
    ("catalog unavailable", "catalog_unavailable"),
    ("unknown route", "unknown_route"),
)


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
    result, reason = upload_outcome(exc)
    if result == "rejected" and reason is not None:
        UPLOAD_REJECTIONS.labels(reason).inc()
    UPLOADS.labels(result).inc()
    return result, reason


def sync_failed(exc: BaseException) -> str:
    """Count one failed sync; returns its reason code."""
    reason = sync_failure(exc)
    SYNC_ERRORS.labels(reason).inc()
    return reason


def sync_succeeded(classes: int | None) -> None:
    """A sync finished: ``classes`` are now published (None: not counted, the gauge stays)."""
    SYNC_LAST_SUCCESS.set_to_current_time()
    if classes is not None:
        CLASSES_PUBLISHED.set(classes)


def agent_readiness(problem: Callable[[], str | None]) -> None:
    """Make :data:`AGENT_READY` say, at each scrape, what the agent's ``/readyz`` says
    (``problem()`` None: ready), so an alert needs no probe of its own."""
    AGENT_READY.set_function(lambda: 0.0 if problem() else 1.0)


def exposition() -> bytes:
    """The metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)
