"""``ooma-moh agent``: one per Asterisk node. It keeps the node's MOH directory and published
classes equal to the shared catalog, and records in the catalog what the node publishes.

- It learns of a change at once (PostgreSQL ``LISTEN ooma_moh_changes``, sent by a trigger on
  every tenant change) and syncs that tenant; it also reconciles every tenant every
  ``agent_reconcile_s`` (a notification missed while it was down or disconnected, an Asterisk
  that restarted, a file removed by hand).
- A sync is the same as ``ooma-moh sync`` on this node (docs/asterisk.md): renditions it lacks are
  downloaded into the local cache and checked, the versioned class directory is completed, and
  only then is the class published to the local Asterisk. So a node publishes a version only once
  it can play it whole, and keeps publishing the last good one when anything fails.
- PostgreSQL or the object storage down: the error is logged (and recorded once the database is
  back), the node keeps what it publishes — callers keep their music — and the agent retries
  with backoff; so does any unexpected error (logged with its traceback). ``kill -9`` at any
  point: the next start converges (a sync is idempotent).
- A sync that published what it could but left something undone is not a failure of the agent:
  a class another application's realtime row holds (:class:`.sync.ClassesRefused`) is recorded
  as a success with what the node publishes; a static-mode reload Asterisk refused
  (:class:`.errors.ReloadPending`) keeps the node's recorded classes (Asterisk still plays the
  old ones) and the next sync retries it. Either is logged as a WARNING and shown by
  ``/readyz``, and the agent goes on following changes.
- The watchdog (``WatchdogSec=``) pings while the loop goes round or a sync reports progress
  (each file placed or downloaded, the publication, the clean-up): a sync stuck on a dead
  connection or a hung file system is killed and restarted by systemd.
- Every ``node_heartbeat_s`` it beats in the catalog (also during a long sync and while backing
  off) and, between syncs, checks the version directories it publishes (:mod:`.nodecheck`): one
  missing or altered is recorded (``ooma-moh nodes`` shows the node ``damaged``), re-published at
  once, and the repair recorded. Silent for 3 intervals, the node is ``down`` (:mod:`.nodestate`).
- A node id belongs to one agent process at a time (a random instance id per process, with the
  heartbeat): an agent whose id another live agent holds refuses to start (:class:`NodeTaken`);
  a holder that is silent — a process just killed — is waited for until its heartbeat is stale.
  A clean stop releases the id. Without a node id the host name is used, unless it is a
  container's, which changes at every start (:func:`node_id_to_use`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Protocol

from . import health, metrics, systemd
from .config import Settings
from .errors import AsteriskError, OomaMohError, ReloadPending, StorageError
from .logsafe import printable, redact
from .nodelife import NodeBook, NodeLife, NodeTaken, node_id_to_use
from .nodelife import default_node_id as default_node_id  # the CLI's default (`agent --node-id`)
from .sync import ClassesRefused, Syncer

log = logging.getLogger(__name__)
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class Changes(Protocol):
    """Tenant changes as they happen (:class:`~ooma_moh.storage.nodes.ChangeFeed`)."""

    def changes(self, timeout: float) -> set[str]: ...
    def close(self) -> None: ...


class Registry(NodeBook, Protocol):
    """Where the agent records what its node publishes (:class:`~ooma_moh.storage.nodes.NodeRegistry`)."""

    def record_success(
        self,
        node_id: str,
        published: dict[str, str],
        at: datetime,
        *,
        scope: Collection[str] | None = None,
        instance_id: str | None = None,
    ) -> bool: ...
    def record_error(self, node_id: str, error: str, at: datetime) -> None: ...
    def listen(self) -> Changes: ...
    def close(self) -> None: ...


def needs_the_catalog(settings: Settings) -> None:
    """An agent follows the shared catalog: none set is the first thing it says."""
    if not settings.database_url:
        raise OomaMohError("the agent needs the shared catalog: set OOMA_MOH_DATABASE_URL")


class Agent:
    """The loop of one node's agent; :meth:`stop` (or SIGTERM) ends it after the current sync.

    Its collaborators come from the wiring (:func:`ooma_moh.app.make_agent`): ``open_syncer()``
    a syncer on a catalog connection of its own (closed through ``syncer.catalog``),
    ``open_registry()`` a node registry connection. Both are kept between syncs and reopened
    after a failure."""

    def __init__(
        self,
        settings: Settings,
        node_id: str,
        *,
        open_syncer: Callable[[], Syncer],
        open_registry: Callable[[], Registry],
    ) -> None:
        needs_the_catalog(settings)
        self.settings, self.node_id = settings, node_id
        self.open_syncer, self.open_registry = open_syncer, open_registry
        self._stop = threading.Event()
        self.syncs = 0
        #: why the node is not ready (``/readyz``), None once a full sync went through
        self.problem: str | None = "starting: the first full sync is not done yet"
        self._syncer: Syncer | None = None
        self._registry: Registry | None = None
        #: monotonic time the loop last went round or a sync last made progress (watchdog)
        self.heartbeat = time.monotonic()
        #: what the last sync left undone although it published (refused classes, a pending
        #: reload), or None; cleared by the next full sync that leaves nothing undone
        self.incomplete: str | None = None
        #: its hold on the node id, its heartbeat, its check of what the node publishes
        self.node = NodeLife(settings, node_id, self._stop, self.beat)

    def beat(self) -> None:
        """The loop went round, or a sync made progress."""
        self.heartbeat = time.monotonic()

    def alive(self, within_s: float) -> bool:
        """Whether the loop went round, or a sync made progress, within ``within_s``. A long sync
        (a catch-up of thousands of tenants) reports progress at every step, so only one that
        is stuck — a dead connection, a hung file system — stops counting as alive."""
        return time.monotonic() - self.heartbeat < within_s

    def stop(self) -> None:
        self._stop.set()

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for :meth:`stop`; whether it was called."""
        return self._stop.wait(timeout)

    def sync(self, tenants: list[str] | None) -> None:
        """Sync ``tenants`` (None: all) on this node and record what it publishes. The catalog
        and node-registry connections are kept between syncs (a PostgreSQL connection is a
        process on the server: opening them per change is what limits a large cluster)."""
        if self._syncer is None:
            self._syncer = self.open_syncer()
        if self._registry is None:
            self._registry = self.open_registry()
        self.beat()
        try:
            report = self._syncer.run(tenants, heartbeat=self._progress)  # logs its own line
        except ClassesRefused as exc:  # the rest is published: a success, with what it left out
            report = exc.report
            self._incomplete(tenants, "classes_refused", f"classes not published: {printable(exc, 300)}")
        except ReloadPending as exc:
            # Asterisk still plays what it loaded at the last reload, which is what the node's
            # record (and the manifest) says: keep it, say why, and let the next sync retry.
            self.beat()
            self._incomplete(tenants, "reload_pending", f"Asterisk reload pending: {printable(exc, 300)}")
            self._registry.record_error(self.node_id, f"reload pending: {redact(str(exc))}", datetime.now(UTC))
            return
        else:
            if tenants is None:
                self.incomplete = None
        self.beat()
        scope = self._syncer.classes_of(tenants)  # a change: its tenants' classes are recorded, no other
        directories = report.now  # read by the sync: every class, or those of ``tenants``
        self.node.note(report, directories, scope)
        published = {c: PurePath(d).name for c, d in directories.items()}
        self.syncs += 1
        at = datetime.now(UTC)
        if self._registry.record_success(self.node_id, published, at, scope=scope, instance_id=self.node.instance_id):
            self.node.beaten()
        self.beat()

    def _incomplete(self, tenants: list[str] | None, reason: str, text: str) -> None:
        """A sync published what it could but left ``text`` undone (``reason``: its code)."""
        metrics.AGENT_INCOMPLETE_SYNCS.labels(reason).inc()
        self.incomplete = text
        scope = "all" if tenants is None else printable(",".join(tenants), 200)
        log.warning(
            "agent node=%s sync scope=%s left something undone (%s): %s; the agent goes on",
            self.node_id,
            scope,
            reason,
            text,
        )

    def _reset(self) -> None:
        """Drop the connections after a failure: the next sync opens new ones."""
        if self._syncer is not None:
            with contextlib.suppress(Exception):
                self._syncer.catalog.close()
        if self._registry is not None:
            with contextlib.suppress(Exception):
                self._registry.close()
        self._syncer = self._registry = None

    @contextlib.contextmanager
    def _registry_briefly(self) -> Iterator[Registry]:
        """A registry connection of its own for one step, closed after it."""
        registry = self.open_registry()
        try:
            yield registry
        finally:
            registry.close()

    def _record_error(self, error: str) -> None:
        try:
            with self._registry_briefly() as registry:
                registry.record_error(self.node_id, error, datetime.now(UTC))
        except OomaMohError:
            pass  # the database is what failed: the log line says it

    def start(self) -> None:
        """Take the node id before the agent says it started: :class:`.nodelife.NodeTaken` if
        another live agent holds it. The catalog unreachable is not an error here: the loop
        takes the id once it is back (a node whose database is down keeps its music)."""
        try:
            with self._registry_briefly() as registry:
                self.node.claim(registry)
        except StorageError as exc:
            log.warning("agent node=%s: %s; the id is taken once the catalog is back", self.node_id, printable(exc))

    def run(self) -> None:
        """Until stopped: take the node id, reconcile, then follow notifications, reconciling
        every ``agent_reconcile_s`` and beating every ``node_heartbeat_s``; on failure back off
        (still beating) and start over. :class:`NodeTaken` ends it; a stop releases the id."""
        failures = 0
        try:
            while not self._stop.is_set():
                listener = None
                try:
                    with self._registry_briefly() as registry:
                        if not self.node.claim(registry):
                            break  # stopped while waiting
                        listener = registry.listen()  # before the full sync: no change falls in between
                    self.sync(None)
                    failures = 0
                    self.problem = self.incomplete
                    log.info("agent node=%s following catalog changes", self.node_id)
                    self._follow(listener)
                except NodeTaken:
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever it is, the node keeps its music and retries
                    failures += 1
                    self._failed(exc, BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
                finally:
                    if listener is not None:
                        listener.close()
        finally:
            self._release()
            self._reset()

    def _failed(self, exc: Exception, delay: float) -> None:
        """Say why the loop failed, drop the connections, and back off ``delay`` s."""
        metrics.AGENT_FAILURES.inc()
        self.problem = failure_text(exc)
        if isinstance(exc, OomaMohError):
            log.warning(
                "agent node=%s: %s; the node keeps what it publishes; retrying in %g s",
                self.node_id,
                printable(exc, 300),
                delay,
            )
        else:  # a bug, or an error nobody translated: its traceback says where
            log.exception(
                "agent node=%s: unexpected error; the node keeps what it publishes; retrying in %g s",
                self.node_id,
                delay,
            )
        self._reset()
        self._record_error(redact(self.problem))
        self.beat()
        waited = 0.0
        while waited < delay:  # in heartbeats: a node whose agent retries is not down
            step = min(self.settings.node_heartbeat_s, delay - waited)
            if self._stop.wait(step):
                return
            waited += step
            self._pulse_alone()

    def _follow(self, listener: Changes) -> None:
        next_full = time.monotonic() + self.settings.agent_reconcile_s
        while not self._stop.is_set():
            self.beat()
            wait = min(1.0, next_full - time.monotonic(), self.node.until_due())
            tenants = listener.changes(timeout=max(0.05, wait))
            if tenants:  # a burst is synced at once
                self.sync(sorted(tenants))
            if time.monotonic() >= next_full:
                self.sync(None)
                next_full = time.monotonic() + self.settings.agent_reconcile_s
            if self.node.beat_due() or self.node.check_due():
                self._pulse()
            self.problem = self.incomplete

    # -- the heartbeat and the check of what the node publishes (:mod:`.nodelife`) --------------

    def _progress(self) -> None:
        """A sync made progress: the watchdog's heartbeat, and the catalog's when it is due (a
        long catch-up is not a node down). A failed beat does not fail the sync."""
        self.beat()
        if self.node.beat_due() and self._registry is not None:
            with contextlib.suppress(StorageError):
                self.node.heartbeat(self._registry)

    def _pulse(self) -> None:
        """Between syncs: the check of what the node publishes (and its repair), then the heartbeat."""
        assert self._registry is not None and self._syncer is not None  # opened by the first sync
        if self.node.check_due():
            self.node.check(self._registry, self._syncer.mohdir.blobs.path, self.sync)
        if self.node.beat_due():
            self.node.heartbeat(self._registry)

    def _pulse_alone(self) -> None:
        """The heartbeat on a connection of its own (while backing off; a failure is the loop's)."""
        try:
            with self._registry_briefly() as registry:
                self.node.heartbeat(registry)
        except NodeTaken:
            raise
        except OomaMohError:
            pass  # the catalog is what fails: the next round says so

    def _release(self) -> None:
        """The agent stops: its node is down at once and its id free for the next start."""
        with contextlib.suppress(OomaMohError), self._registry_briefly() as registry:
            self.node.release(registry)


def run_agent(settings: Settings, node_id: str) -> None:
    """``ooma-moh agent`` until SIGTERM/SIGINT. In order: the shared catalog set; the metrics
    listener (a port in use is one error, before anything else); the node id
    (:func:`.nodelife.node_id_to_use`); the node id taken (another live agent holding it:
    :class:`.nodelife.NodeTaken`, the agent does not start; the catalog unreachable: taken once it
    is back); then the loop."""
    from .app import make_agent  # the wiring; the agent module itself imports no back end

    needs_the_catalog(settings)
    started: list[Agent] = []  # for /readyz until the agent exists
    stop_metrics = None
    if settings.metrics_address is not None:
        port, stop_metrics = health.serve_in_thread(
            settings.metrics_address, lambda: started[0].problem if started else "starting"
        )
    try:
        agent = make_agent(settings, node_id_to_use(node_id))
        started.append(agent)
        metrics.agent_readiness(lambda: agent.problem)  # ooma_moh_agent_ready = /readyz (docs/monitoring.md)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: agent.stop())
        log.info("agent node=%s starting", agent.node_id)
        agent.start()
        if settings.metrics_address is not None:
            log.info("metrics on %s:%d (/metrics, /healthz, /readyz)", settings.metrics_address[0], port)
        watchdog = threading.Thread(target=_watchdog, args=(agent,), name="watchdog", daemon=True)
        watchdog.start()
        systemd.ready()
        try:
            agent.run()
        finally:
            systemd.stopping()
    finally:
        if stop_metrics is not None:
            stop_metrics()
    log.info("agent node=%s stopped", agent.node_id)


def failure_text(exc: BaseException) -> str:
    """Why the agent is backing off, for ``/readyz`` and ``ooma-moh nodes`` (one line)."""
    if isinstance(exc, StorageError):
        cause = "catalog or storage failing"  # the message says which: database, object storage, disk
    elif isinstance(exc, AsteriskError):
        cause = "Asterisk failing"
    elif isinstance(exc, OomaMohError):
        cause = "sync failing"
    else:
        cause = f"unexpected error ({type(exc).__name__})"
    return f"{cause}: {printable(redact(str(exc)), 200)}; retrying"


def watchdog_window(interval: float) -> float:
    """How long the agent may go without a heartbeat before the watchdog stops pinging: the loop
    beats at least every second, every 30 s while backing off, and a sync at each of its steps."""
    return max(4 * interval, BACKOFF_S[-1] + 5)


def _watchdog(agent: Agent, interval: float | None = None) -> None:
    """Under systemd with ``WatchdogSec=``: ping while the agent's loop goes round or its sync
    makes progress (a stuck agent is killed and restarted). ``interval`` defaults to half of
    ``WatchdogSec=``; returns when the agent stops, or at once without a watchdog."""
    interval = systemd.watchdog_interval() if interval is None else interval
    if interval is None:
        return
    while not agent.wait_stopped(interval):
        if agent.alive(within_s=watchdog_window(interval)):
            systemd.notify("WATCHDOG=1")
