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
  with backoff. ``kill -9`` at any point: the next start converges (a sync is idempotent).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import psycopg

from . import metrics, systemd
from .app import build_service, build_syncer
from .config import Settings
from .errors import OomaMohError
from .logsafe import printable
from .service import MohService
from .storage.nodes import NodeRegistry
from .sync import Syncer

log = logging.getLogger(__name__)
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def default_node_id() -> str:
    """The node's name when ``OOMA_MOH_NODE_ID`` is not set: the host name."""
    return socket.gethostname()


class Agent:
    """The loop of one node's agent; :meth:`stop` (or SIGTERM) ends it after the current sync."""

    def __init__(self, settings: Settings, node_id: str) -> None:
        if not settings.database_url:
            raise OomaMohError("the agent needs the shared catalog: set OOMA_MOH_DATABASE_URL")
        self.settings, self.node_id = settings, node_id
        self._stop = threading.Event()
        self.syncs = 0
        #: why the node is not ready (``/readyz``), None once a full sync went through
        self.problem: str | None = "starting: the first full sync is not done yet"
        self._service: MohService | None = None
        self._syncer: Syncer | None = None
        self._registry: NodeRegistry | None = None
        #: monotonic time the loop last went round, and whether a sync is under way (watchdog)
        self.heartbeat = time.monotonic()
        self.syncing = False

    def alive(self, within_s: float) -> bool:
        """Whether the loop went round within ``within_s``, or a sync is running (a catch-up of
        thousands of tenants is long; each of its requests has its own timeout)."""
        return self.syncing or time.monotonic() - self.heartbeat < within_s

    def stop(self) -> None:
        self._stop.set()

    def sync(self, tenants: list[str] | None) -> None:
        """Sync ``tenants`` (None: all) on this node and record what it publishes. The catalog
        and node-registry connections are kept between syncs (a PostgreSQL connection is a
        process on the server: opening them per change is what limits a large cluster)."""
        if self._service is None:
            self._service = build_service(self.settings)
            self._syncer = build_syncer(self.settings, self._service)
        if self._registry is None:
            self._registry = NodeRegistry(self.settings.database_url)
        assert self._syncer is not None
        self.syncing = True
        try:
            self._syncer.run(tenants)  # logs its own line
            published = {c: PurePath(d).name for c, d in self._syncer.published().items()}
            self.syncs += 1
            self._registry.record_success(self.node_id, published, datetime.now(UTC))
        finally:
            self.syncing = False
            self.heartbeat = time.monotonic()

    def _reset(self) -> None:
        """Drop the connections after a failure: the next sync opens new ones."""
        if self._service is not None:
            with contextlib.suppress(Exception):
                self._service.catalog.close()
        if self._registry is not None:
            with contextlib.suppress(Exception):
                self._registry.close()
        self._service = self._syncer = self._registry = None

    def _record_error(self, error: str) -> None:
        try:
            registry = NodeRegistry(self.settings.database_url)
            try:
                registry.record_error(self.node_id, error, datetime.now(UTC))
            finally:
                registry.close()
        except OomaMohError:
            pass  # the database is what failed: the log line says it

    def run(self) -> None:
        """Until stopped: reconcile, then follow notifications, reconciling every
        ``agent_reconcile_s``; on failure back off and start over."""
        failures = 0
        while not self._stop.is_set():
            listener = None
            try:
                registry = NodeRegistry(self.settings.database_url)
                try:
                    listener = registry.listen()  # before the full sync: no change falls in between
                finally:
                    registry.close()
                self.sync(None)
                failures = 0
                self.problem = None
                log.info("agent node=%s following catalog changes", self.node_id)
                self._follow(listener)
            except (OomaMohError, psycopg.Error) as exc:
                failures += 1
                metrics.AGENT_FAILURES.inc()
                self.problem = f"catalog or object storage failing: {printable(exc, 200)}"
                delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
                log.warning("agent node=%s: %s; the node keeps what it publishes; retrying in %g s",
                            self.node_id, printable(exc, 300), delay)
                self._reset()
                self._record_error(str(exc))
                self.heartbeat = time.monotonic()
                self._stop.wait(delay)
            finally:
                if listener is not None:
                    listener.close()
        self._reset()

    def _follow(self, listener: psycopg.Connection[Any]) -> None:
        next_full = time.monotonic() + self.settings.agent_reconcile_s
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            tenants: set[str] = set()
            timeout = max(0.05, min(1.0, next_full - time.monotonic()))
            for notice in listener.notifies(timeout=timeout):
                tenants.add(notice.payload)
                timeout = 0.05  # gather a burst, then sync it at once
                break
            for notice in listener.notifies(timeout=0.05):  # the rest of a burst
                tenants.add(notice.payload)
            if tenants:
                self.sync(sorted(tenants))
            if time.monotonic() >= next_full:
                self.sync(None)
                next_full = time.monotonic() + self.settings.agent_reconcile_s


def run_agent(settings: Settings, node_id: str) -> None:
    """``ooma-moh agent`` until SIGTERM/SIGINT."""
    agent = Agent(settings, node_id)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    stop_metrics = None
    if settings.metrics_address is not None:  # first: a port in use is one error, before "starting"
        port, stop_metrics = metrics.serve_in_thread(settings.metrics_address, lambda: agent.problem)
    log.info("agent node=%s starting", node_id)
    if settings.metrics_address is not None:
        log.info("metrics on %s:%d (/metrics, /healthz, /readyz)", settings.metrics_address[0], port)
    watchdog = threading.Thread(target=_watchdog, args=(agent,), name="watchdog", daemon=True)
    watchdog.start()
    systemd.ready()
    try:
        agent.run()
    finally:
        systemd.stopping()
        if stop_metrics is not None:
            stop_metrics()
    log.info("agent node=%s stopped", node_id)


def _watchdog(agent: Agent) -> None:
    """Under systemd with ``WatchdogSec=``: ping while the agent's loop goes round (a stuck agent
    is killed and restarted). The loop waits at most 1 s between rounds, 30 s when backing off."""
    interval = systemd.watchdog_interval()
    if interval is None:
        return
    while not agent._stop.wait(interval):
        if agent.alive(within_s=max(4 * interval, BACKOFF_S[-1] + 5)):
            systemd.notify("WATCHDOG=1")
