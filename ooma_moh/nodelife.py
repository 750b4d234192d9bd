"""An agent's node in the catalog's registry: the node id, held by one agent process at a time;
the heartbeat; and the check, repair and record of what the node publishes (docs/cluster.md,
"Nodes"). :class:`~ooma_moh.agent.Agent` drives it from its loop.

- **The node id.** ``OOMA_MOH_NODE_ID`` (or ``--node-id``); without one, the host name — refused
  when that name will change at the next start (a container's: :func:`ephemeral_host`), since each
  start would then be a new node and the old one would stay behind, down.
- **One process per id.** Each agent process has a random instance id, written with its heartbeat.
  An agent takes its id (:meth:`NodeLife.claim`) if it is free, released, or its holder's
  heartbeat is stale (:mod:`.nodestate`). A holder whose heartbeat is still fresh is either live
  or was just killed. Known to have ended (:func:`ended`: the same boot and pid namespace, its pid
  gone — a crash under systemd), it is replaced at once; otherwise the new agent waits until the
  holder beats again — a live agent: this one refuses to start (:class:`NodeTaken`) — or stays
  silent for the grace — then it takes over. An agent that finds its id taken by another process
  while it runs stops the same way.
- **The heartbeat**, every ``node_heartbeat_s`` (server time), also while a long sync runs and
  while the agent backs off; a clean stop releases the id (the node is ``down`` at once).
- **The check** (:mod:`.nodecheck`), at each heartbeat between syncs: damage found is recorded
  (``damaged``), the damaged classes are re-published at once, and the repair is recorded (or
  why it failed; it is tried again at the next heartbeat).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Protocol

from .config import Settings
from .errors import OomaMohError
from .logsafe import printable
from .nodecheck import Damage, Published, describe, prepare_repair
from .nodestate import Holder, Process, grace_s
from .sync import SyncReport

log = logging.getLogger("ooma_moh.agent")
#: files a container runtime puts in its containers (Docker, Podman)
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")


class NodeTaken(OomaMohError):
    """Another live agent process holds this agent's node id."""


class HostName(str):
    """A node id that is the host name by default (no ``OOMA_MOH_NODE_ID``, no ``--node-id``)."""


def default_node_id() -> HostName:
    """The node's name when ``OOMA_MOH_NODE_ID`` is not set: the host name (judged when the agent
    starts, :func:`node_id_to_use`)."""
    return HostName(socket.gethostname())


def ephemeral_host(hostname: str, exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """Why ``hostname`` will likely change at the next start, or None; in order: a container
    runtime's marker file exists (:data:`CONTAINER_MARKERS`); the name looks like a container id
    (12 or 64 hex digits)."""
    if marker := next((m for m in CONTAINER_MARKERS if exists(m)), None):
        return f"this host is a container ({marker} exists)"
    if re.fullmatch(r"[0-9a-f]{12}|[0-9a-f]{64}", hostname):
        return "it looks like a container id"
    return None


def node_id_to_use(node_id: str, exists: Callable[[str], bool] = os.path.exists) -> str:
    """``node_id``, the host name when empty; a host name taken by default that will change at
    the next start (:func:`ephemeral_host`) is refused."""
    if not node_id:
        node_id = default_node_id()
    if isinstance(node_id, HostName) and (why := ephemeral_host(node_id, exists)):
        raise OomaMohError(
            f"no node id: the default is the host name {str(node_id)!r}, but {why}, so it changes at"
            " every restart (each start a new node, the old one left down): set OOMA_MOH_NODE_ID"
            " (or --node-id) to a name of this node that stays the same"
        )
    return str(node_id)


def taken_text(node_id: str, holder: Holder) -> str:
    """Why an agent may not use ``node_id`` (one line)."""
    return (
        f"another agent holds node id {node_id!r} and is live ({holder.holder or 'unknown process'},"
        f" heartbeat {holder.heartbeat_age_s or 0.0:.1f} s ago): stop it, or give this agent a node id"
        " of its own (OOMA_MOH_NODE_ID or --node-id)"
    )


def here() -> str | None:
    """Where a pid names one process: this boot and this pid namespace; None if unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def running(pid: int) -> bool:
    """Whether a process ``pid`` exists here (a zombie, or another user's, counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ended(holder: Holder, me: Process, is_running: Callable[[int], bool] = running) -> bool:
    """Whether the process holding a node id is known to have ended, although its heartbeat is
    fresh (killed, crashed): it ran where its pid means the same as ours (same boot, same pid
    namespace), it is not us, and no process has its pid. Otherwise — another host, another
    container, its pid taken again — nobody knows, and its heartbeat decides."""
    return (
        me.where is not None
        and holder.where == me.where
        and holder.pid is not None
        and holder.pid != me.pid
        and not is_running(holder.pid)
    )


class NodeBook(Protocol):
    """The registry's side of a node's life (:class:`~ooma_moh.storage.nodes.NodeRegistry`)."""

    def claim(self, node_id: str, me: Process, heartbeat_s: float, replacing: str | None = None) -> Holder | None: ...
    def heartbeat(self, node_id: str, instance_id: str, heartbeat_s: float) -> bool: ...
    def release(self, node_id: str, instance_id: str) -> None: ...
    def record_check(
        self, node_id: str, instance_id: str, damage: str | None, classes: list[str], repaired: str | None
    ) -> None: ...


class NodeLife:
    """One agent process's hold on its node id, its heartbeat and its manifest (module docstring).
    ``stopped``: the agent's stop signal; ``beat()``: the agent's watchdog heartbeat."""

    def __init__(self, settings: Settings, node_id: str, stopped: threading.Event, beat: Callable[[], None]) -> None:
        self.settings, self.node_id = settings, node_id
        self._stopped, self._beat = stopped, beat
        self.interval = settings.node_heartbeat_s
        self.me = Process(secrets.token_hex(8), f"pid {os.getpid()} on {socket.gethostname()}", os.getpid(), here())
        self.instance_id = self.me.instance_id
        #: what the node publishes, checked at each heartbeat
        self.manifest = Published()
        #: damage recorded in the catalog and not repaired yet (with why a repair failed), and as found
        self.damage: str | None = None
        self._found: str | None = None
        self._next_beat = self._next_check = 0.0  # monotonic times they are due

    def beat_due(self) -> bool:
        return time.monotonic() >= self._next_beat

    def check_due(self) -> bool:
        return time.monotonic() >= self._next_check

    def until_due(self) -> float:
        """Seconds until the heartbeat or the check is due."""
        return min(self._next_beat, self._next_check) - time.monotonic()

    def claim(self, book: NodeBook) -> bool:
        """Take the node id (module docstring); False if the agent was stopped first."""
        first: Holder | None = None
        while not self._stopped.is_set():
            holder = book.claim(self.node_id, self.me, self.interval)
            if holder is not None and ended(holder, self.me):
                log.info("agent node=%s: its last agent (%s) has ended; taking over", self.node_id, holder.holder)
                holder = book.claim(self.node_id, self.me, self.interval, replacing=holder.instance_id)
            if holder is None:
                self._next_beat = time.monotonic() + self.interval
                return True
            if first is None:
                first = holder
                log.warning(
                    "agent node=%s: the node id is held by another agent (%s, last heartbeat %.1f s ago); waiting"
                    " up to %g s: if it beats again this agent stops, if it stays silent this one takes over",
                    self.node_id,
                    holder.holder or "unknown process",
                    holder.heartbeat_age_s or 0.0,
                    grace_s(holder.heartbeat_s or self.interval),
                )
            elif (holder.instance_id, holder.heartbeat_at) != (first.instance_id, first.heartbeat_at):
                raise NodeTaken(taken_text(self.node_id, holder))
            self._beat()
            self._stopped.wait(min(0.5, self.interval / 4))
        return False

    def heartbeat(self, book: NodeBook) -> None:
        """Beat; :class:`NodeTaken` if another process took the id meanwhile (a removed node is
        registered again: its agent runs)."""
        self._next_beat = time.monotonic() + self.interval
        if book.heartbeat(self.node_id, self.instance_id, self.interval):
            return
        holder = book.claim(self.node_id, self.me, self.interval)
        if holder is not None:
            raise NodeTaken(taken_text(self.node_id, holder))
        log.warning(
            "agent node=%s: the node was removed or judged down while this agent ran; registered again", self.node_id
        )

    def release(self, book: NodeBook) -> None:
        book.release(self.node_id, self.instance_id)

    def beaten(self) -> None:
        """The registry took another write of this agent as its heartbeat: the next is due an
        interval from now (a node whose agent records a change every few seconds beats no more)."""
        self._next_beat = time.monotonic() + self.interval

    def note(self, report: SyncReport, directories: dict[str, str], scope: Collection[str] | None = None) -> None:
        """After a sync: the manifest follows what the node now publishes (class -> directory;
        with ``scope``, of those classes: the sync was of named tenants)."""
        self.manifest.keep_only(directories, within=scope)
        for item in report.plan:
            if item.tenant is not None and item.directory and directories.get(item.moh_class) == item.directory:
                self.manifest.note(item.moh_class, Path(item.directory), item.tenant.renditions)

    def check(self, book: NodeBook, blob_path: Callable[[str], Path], republish: Callable[[list[str]], None]) -> None:
        """Check what the node publishes; record damage, repair it (``republish(tenants)``: a sync
        of those tenants; ``blob_path``: where the local blob store keeps a blob), record the repair.
        Due every interval, whatever the syncs in between."""
        self._next_check = time.monotonic() + self.interval
        damages = self.manifest.check()
        if damages:
            self._repair(book, damages, blob_path, republish)
        elif self.damage is not None:  # repaired since (a later sync rebuilt it)
            book.record_check(self.node_id, self.instance_id, None, [], self._found)
            log.info("agent node=%s: repaired %s", self.node_id, printable(self._found, 500))
            self.damage = self._found = None

    def _repair(
        self,
        book: NodeBook,
        damages: list[Damage],
        blob_path: Callable[[str], Path],
        republish: Callable[[list[str]], None],
    ) -> None:
        found, classes = describe(damages), sorted(d.moh_class for d in damages)
        if found != self._found:  # new damage (else: recorded already, with why its repair failed)
            log.warning(
                "agent node=%s: published files damaged: %s; re-publishing", self.node_id, printable(found, 500)
            )
            self._found = found
            self._record(book, found, classes)
        started = time.monotonic()
        try:
            for damage in damages:
                prepare_repair(damage, blob_path, cache=bool(self.settings.blob_url))
            republish(sorted(_tenants(classes, self.settings.class_prefix)))
        except NodeTaken:
            raise
        except OomaMohError as exc:  # said, and tried again at the next heartbeat
            self._record(book, f"{found}; repair failed: {printable(exc, 300)}", classes)
            return
        if still := self.manifest.check(classes):  # the rebuilt files are new: their content is checked
            self._record(book, f"{found}; still after re-publishing: {describe(still)}", classes)
            return
        book.record_check(self.node_id, self.instance_id, None, [], found)
        elapsed = time.monotonic() - started
        log.info("agent node=%s: repaired in %.3f s: %s", self.node_id, elapsed, printable(found, 500))
        self.damage = self._found = None

    def _record(self, book: NodeBook, damage: str, classes: list[str]) -> None:
        """Record ``damage`` (not repaired); logged unless recorded last or just said as found."""
        if damage not in (self.damage, self._found):
            log.warning("agent node=%s: %s", self.node_id, printable(damage, 500))
        book.record_check(self.node_id, self.instance_id, damage, classes, None)
        self.damage = damage


def _tenants(classes: Iterable[str], prefix: str) -> set[str]:
    return {c.removeprefix(prefix) for c in classes}
