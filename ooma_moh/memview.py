"""What a read answers from memory, and when it reads the truth instead: ``GET …/moh``'s status,
and the hold paths' class of a tenant.

The truth is the catalog and what Asterisk reads (the realtime database or the include file).
:class:`StatusMemory` keeps, per tenant, the last read of it — for ``serve http`` the tenant as
the catalog has it and whether Asterisk plays exactly that, and, on a SQLite catalog, the
credentials a request was last checked with; for the hold paths (``serve ari``, ``serve agi``:
:class:`ooma_moh.resolve.ClassResolver`) the tenant's class as the catalog's answer makes it,
under the SQLite catalog's mark alone (rule 5 does not apply: they change nothing). The rules,
in order:

1. **Marks.** Each local source has a mark that changes whenever anything is committed to it: the
   SQLite catalog's ``PRAGMA data_version`` with the file's inode (:class:`SqliteMark`), the
   realtime database's likewise (or its absence), the include file's inode, mtime and size
   (:class:`FileMark`). A PostgreSQL catalog has none: its trigger's notifications (one per tenant
   changed) are heard by a thread (:class:`Notifications`).
2. **Checked before each recall.** Before anything is recalled the marks are read (no query: a
   few system calls), unless they were read less than ``COALESCE_S`` (2 ms) ago; if one differs
   from the marks the memory was filled under, everything kept is forgotten, and each tenant's
   next GET reads it again (the catalog's row, then what Asterisk reads). A change committed to a
   local source by anyone — this server, the CLI, another process — 2 ms before a GET starts is
   seen by that GET. A PostgreSQL notification makes its tenant's entry void as soon as it is
   heard, milliseconds after the commit.
3. **Unavailable: read.** If a mark cannot be read (SQLite busy committing, an error, the
   catalog's file gone), or the PostgreSQL listener has not completed a turn — a round trip, then
   up to ``WAIT_S`` of listening — that started within ``STALE_S`` (100 ms), nothing is recalled:
   the GET reads the truth as it always did (catalog, then what Asterisk reads), and keeps it only
   by rule 4. A lost connection is so noticed within 100 ms, and no answer is older than that.
4. **Kept only if nothing moved during the read.** A read fills memory only if the marks, the
   tenant's notifications and the listener's connection are the same just after it as just before
   it (a change committed meanwhile may have been seen half).
5. **This server's own changes.** An entry is recalled only while the tenant's
   :meth:`~ooma_moh.http.publication.Publications.changes` (publications started or ended here) is
   what it was at the read: an upload, a deletion, a restore or a saved draft made through this
   server, and what its publications did, are seen by the next GET at once.
6. **Never kept**: what this server is doing (converting, publishing, a failure: ``Publications``
   tracks it), the cluster's node counts (no notification: read at each GET), credentials on
   PostgreSQL (no notification for tokens and sessions), failed checks, a session's expiry (the
   caller checks it against the clock at each use); beyond ``MAX_KEPT`` tenants (or credentials)
   the first kept is dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import OomaMohError

log = logging.getLogger(__name__)
STALE_S = 0.1
WAIT_S = 0.04
COALESCE_S = 0.002
#: tenants (and credentials) kept at most: the oldest kept goes first
MAX_KEPT = 10_000
#: tenants whose notifications are counted at most, before the counts start again
MAX_COUNTED = 1_000_000
#: the mark of a source that does not exist yet (nothing published): a fact, not an error
ABSENT = "absent"


class Mark(Protocol):
    """A local source's change mark (rule 1)."""

    def read(self) -> Hashable | None:
        """The mark now; None when it cannot be read (rule 3)."""

    def close(self) -> None:
        """Release what it holds."""


class SqliteMark:
    """``PRAGMA data_version`` of a SQLite file and its inode, read on a read-only connection of
    its own that never waits for a lock (busy: None). ``absent_ok``: a missing file is a mark."""

    def __init__(self, path: Path, *, absent_ok: bool) -> None:
        self.path, self.absent_ok = path, absent_ok
        self._db: sqlite3.Connection | None = None
        self._inode = -1
        self._opened = 0  # data_version counts per connection: a new one starts again

    def read(self) -> Hashable | None:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            self.close()
            return ABSENT if self.absent_ok else None
        except OSError:
            return None
        try:
            if self._db is None or inode != self._inode:
                self.close()
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=0, isolation_level=None, check_same_thread=False
                )
                self._inode, self._opened = inode, self._opened + 1
            return inode, self._opened, self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY":  # busy: a commit in progress
                self.close()
            return None
        except sqlite3.Error:
            self.close()
            return None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class FileMark:
    """A file replaced by a rename (the include file): its inode, mtime and size."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Hashable | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return ABSENT
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def close(self) -> None:
        pass


class Feed(Protocol):
    """:class:`ooma_moh.storage.nodes.ChangeFeed` as the listener uses it."""

    def ping(self) -> None: ...
    def changes(self, timeout: float, burst_s: float | None = None) -> set[str]: ...
    def close(self) -> None: ...


class Notifications:
    """A PostgreSQL catalog's notifications, heard in turns by :meth:`run` (a thread): each turn
    is a round trip on the listening connection, then up to ``WAIT_S`` of listening; every tenant
    named counts one more change. ``connection`` moves at each new connection (changes made while
    none listened are unknown)."""

    def __init__(self, listen: Callable[[], Feed], clock: Callable[[], float] = time.monotonic) -> None:
        self._listen, self._clock = listen, clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connection = 0
        #: start of the last turn completed on the current connection (None: not listening)
        self.heard_at: float | None = None

    def fresh(self) -> bool:
        """Whether the last completed turn started within ``STALE_S`` (rule 3)."""
        heard = self.heard_at
        return heard is not None and self._clock() - heard <= STALE_S

    def stamp(self, tenant_id: str) -> tuple[int, int]:
        """(connection, changes heard for the tenant on it)."""
        with self._lock:
            return self.connection, self._counts.get(tenant_id, 0)

    def connected(self) -> None:
        """A new listening connection: whatever was heard before says nothing any more."""
        with self._lock:
            self.connection += 1
            self._counts.clear()
            self.heard_at = None

    def turn(self, feed: Feed) -> None:
        """One turn (``StorageError`` when the connection fails: then not fresh)."""
        started = self._clock()
        try:
            feed.ping()
            changed = feed.changes(WAIT_S, burst_s=0)
        except OomaMohError:
            self.heard_at = None
            raise
        with self._lock:
            for tenant_id in changed:
                self._counts[tenant_id] = self._counts.get(tenant_id, 0) + 1
            if len(self._counts) > MAX_COUNTED:
                self.connection += 1  # entries stamped before are void: counts can restart
                self._counts.clear()
            self.heard_at = started

    def run(self, retry_s: float = 1.0) -> None:
        """Listen until :meth:`close`, connecting again ``retry_s`` after a failure (logged once
        per outage)."""
        failing = False
        while not self._stop.is_set():
            try:
                feed = self._listen()
            except OomaMohError as exc:
                if not failing:
                    log.warning("not following catalog changes (GET …/moh reads the catalog): %s", exc)
                failing = True
                self._stop.wait(retry_s)
                continue
            if failing:
                log.info("following catalog changes again")
            failing = False
            self.connected()
            try:
                while not self._stop.is_set():
                    self.turn(feed)
            except OomaMohError as exc:
                log.warning("lost the catalog's change notifications (GET …/moh reads the catalog): %s", exc)
                failing = True
            finally:
                feed.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="ooma-moh-notifications", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.heard_at = None
        if self._thread is not None:
            self._thread.join(timeout=2 * WAIT_S + 1)


@dataclass(frozen=True)
class Ticket:
    """What the sources said just before a read (rule 4)."""

    marks: tuple[Hashable, ...]
    epoch: int
    heard: tuple[int, int] | None
    changes: int


class StatusMemory:
    """The memory of the module docstring, used on the event loop's thread (``notifications``
    may be heard on another)."""

    def __init__(
        self,
        marks: list[Mark],
        notifications: Notifications | None = None,
        *,
        credentials: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``credentials``: whether credentials may be kept (only when the marks cover them)."""
        self.marks, self.notifications, self.keeps_credentials = marks, notifications, credentials
        self._clock = clock
        self._seen: tuple[Hashable, ...] | None = None
        self._read_at = float("-inf")
        self._epoch = 0
        self._tenants: dict[str, tuple[Ticket, Any]] = {}
        self._credentials: dict[tuple[str, str], tuple[Ticket, Any]] = {}

    def _now(self, *, fresh: bool) -> tuple[Hashable, ...] | None:
        """The marks, read now (``fresh``, or last read ``COALESCE_S`` ago or more), everything
        forgotten if they moved (rule 2); None: unavailable (rule 3)."""
        if self.notifications is not None and not self.notifications.fresh():
            return None
        now = self._clock()
        if not fresh and now - self._read_at < COALESCE_S:
            return self._seen
        marks = tuple(mark.read() for mark in self.marks)
        if None in marks:
            self._read_at = float("-inf")
            return None
        self._read_at = now
        if marks != self._seen:
            self._seen = marks
            self._epoch += 1
            self._tenants.clear()
            self._credentials.clear()
        return marks

    def _stamp(self, tenant_id: str, changes: int, *, fresh: bool) -> Ticket | None:
        marks = self._now(fresh=fresh)
        if marks is None:
            return None
        heard = self.notifications.stamp(tenant_id) if self.notifications is not None else None
        return Ticket(marks, self._epoch, heard, changes)

    def ticket(self, tenant_id: str, changes: int) -> Ticket | None:
        """What the sources say before a read of ``tenant_id``; None: nothing may be kept."""
        return self._stamp(tenant_id, changes, fresh=False)

    def recall(self, tenant_id: str, changes: int) -> Any | None:
        """The tenant's state as last read, if still the truth (rules 2, 3, 5); else None: read."""
        kept = self._tenants.get(tenant_id)
        if kept is None or self._stamp(tenant_id, changes, fresh=False) != kept[0]:
            return None
        return kept[1]

    def keep(self, ticket: Ticket | None, tenant_id: str, changes: int, state: Any) -> None:
        """Keep ``state``, read under ``ticket``, unless a source moved meanwhile (rule 4: the
        marks read again now, never the last reading)."""
        if ticket is None or self._stamp(tenant_id, changes, fresh=True) != ticket:
            return
        _put(self._tenants, tenant_id, (ticket, state))

    def recall_credential(self, kind: str, secret: str) -> Any | None:
        """The principal ``secret`` was last checked as, if the catalog has not moved since."""
        if not self.keeps_credentials:
            return None
        kept = self._credentials.get((kind, _digest(secret)))
        if kept is None or self._stamp("", 0, fresh=False) != kept[0]:
            return None
        return kept[1]

    def credential_ticket(self) -> Ticket | None:
        """What the sources say before a credential is checked; None: it will not be kept."""
        return self.ticket("", 0) if self.keeps_credentials else None

    def keep_credential(self, ticket: Ticket | None, kind: str, secret: str, principal: Any) -> None:
        """Keep a successful check made under ``ticket`` (rule 4; failures are never kept)."""
        if ticket is None or principal is None or self._stamp("", 0, fresh=True) != ticket:
            return
        _put(self._credentials, (kind, _digest(secret)), (ticket, principal))

    def close(self) -> None:
        if self.notifications is not None:
            self.notifications.close()
        for mark in self.marks:
            with contextlib.suppress(sqlite3.Error):
                mark.close()


def _put(kept: dict[Any, Any], key: Any, value: Any) -> None:
    """``kept[key] = value``, the first entry dropped to make room beyond ``MAX_KEPT``."""
    if key not in kept and len(kept) >= MAX_KEPT:
        del kept[next(iter(kept))]
    kept[key] = value


def _digest(secret: str) -> str:
    """Credentials are kept under their secret's digest, never the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()
