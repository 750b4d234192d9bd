"""The PostgreSQL catalog database: connecting, its schema versions (``migrations/NNNN_*.sql``,
applied by ``ooma-moh db upgrade`` under an advisory lock, one transaction per version), and how
psycopg's errors become :class:`~ooma_moh.errors.StorageError` (the only place they are translated;
:mod:`.postgres` and :mod:`.nodes` use it)."""

from __future__ import annotations

import contextlib
import re
import time
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..errors import StorageError
from ..logsafe import redact

SCHEMA_LOCK = 0x6F6D6801  # pg_advisory_xact_lock key of schema changes

#: SQLSTATE (or its class) -> (StorageError reason, what happened)
PG_ERRORS = {
    "53100": ("disk_full", "the catalog database's disk is full"),
    "53": ("resources", "the catalog database is out of resources"),
    "25006": ("read_only", "the catalog database is read-only for this process"),
    "42501": ("permission", "permission denied on the catalog database"),
    "28": ("permission", "the catalog database refused the credentials"),
    "57P": ("catalog_unreachable", "the catalog database is shutting down or restarting"),
    "08": ("catalog_unreachable", "the connection to the catalog database failed"),
    "40": ("busy", "the catalog database aborted the transaction (conflict); try again"),
}


def pg_error(exc: psycopg.Error, doing: str, *, writing: bool = False) -> StorageError:
    """The :class:`StorageError` for a psycopg failure while ``doing`` something; a failed write
    says that nothing was changed (a read changes nothing anyway: it says it could not read)."""
    state = exc.sqlstate or ""
    outcome = "; nothing was changed" if writing else ""
    for prefix, (reason, text) in PG_ERRORS.items():
        if state.startswith(prefix):
            return StorageError(reason, f"{text} (while {doing}){outcome}")
    if isinstance(exc, psycopg.OperationalError):
        return StorageError(
            "catalog_unreachable",
            f"the catalog database cannot be reached (while {doing}): {_first_line(exc)}{outcome}",
        )
    return StorageError("catalog_error", f"the catalog database failed while {doing} ({_first_line(exc)}){outcome}")


def connection_lost(exc: psycopg.Error) -> bool:
    """Whether ``exc`` means the connection is gone (the server restarted, failed over, or the
    network dropped it) rather than a problem with the statement: worth one new connection."""
    state = exc.sqlstate or ""
    return state.startswith(("08", "57P")) or (isinstance(exc, psycopg.OperationalError) and not state)


def _first_line(exc: Exception) -> str:
    """The error's first line, its quoted passwords redacted: psycopg quotes a connection string
    it cannot parse whole (``missing "=" after "postgres//user:password@db/x"``), and this text
    reaches logs, ``/readyz``, ``ooma-moh nodes`` and doctor."""
    return redact((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration shipped, in order."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


LATEST = migrations()[-1][0]


#: a statement that runs longer is cancelled by the server (a hung query must not hang an agent
#: or a request forever; the longest of ours, a full reconcile's catalog read, takes well under a
#: second per thousand tenants). ``upgrade`` lifts it: a migration may legitimately run longer.
STATEMENT_TIMEOUT_MS = 60_000
#: TCP keepalives: a server or network gone silent (no RST) is noticed within about a minute
#: instead of the kernel's two hours, so a blocked read fails and the caller reconnects
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 30, 10, 3


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    try:
        return psycopg.connect(
            url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=10,
            options=f"-c TimeZone=UTC -c statement_timeout={STATEMENT_TIMEOUT_MS}",
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE_S,
            keepalives_interval=KEEPALIVE_INTERVAL_S,
            keepalives_count=KEEPALIVE_COUNT,
        )
    except psycopg.Error as exc:
        raise pg_error(exc, "connecting to the catalog") from None


#: a connection idle this long is checked before use (one round trip; none while busy)
PING_AFTER_IDLE_S = 1.0


class KeptConnection:
    """One connection to the catalog database, kept usable across restarts and failovers of the
    server, so that the first call after one succeeds instead of failing once:

    1. a connection broken by the last call is replaced by a new one;
    2. before a write (``get(ping=True)``), and before any use after :data:`PING_AFTER_IDLE_S`
       idle, one ``SELECT 1`` checks it, and a lost one is replaced — except for a caller that
       runs its work once more itself when the connection was lost (``get(idle_ping=False)``:
       the catalog's reads, ``postgres.read``, and an agent's idempotent writes, :mod:`.nodes`),
       for which the check is a transaction more;
    3. a read that failed because the connection was lost mid-way is run once more by its caller
       (:meth:`lost` says so; ``postgres.read`` does it): a read changes nothing.

    Each new connection is checked to be on the schema this code knows. ``connect_now=False``:
    the first connection is opened at the first :meth:`get`."""

    def __init__(self, url: str, *, writable: bool, connect_now: bool = True) -> None:
        self.url, self.writable = url, writable
        self._db: psycopg.Connection[dict[str, Any]] | None = None
        self._used_at = 0.0
        if connect_now:
            self._db = self._open()

    def get(self, *, ping: bool = False, idle_ping: bool = True) -> psycopg.Connection[dict[str, Any]]:
        """The connection, checked if it was idle (unless not ``idle_ping``) or ``ping``, replaced if lost."""
        db, now = self._db, time.monotonic()
        idle = idle_ping and now - self._used_at > PING_AFTER_IDLE_S
        if db is not None and (ping or idle) and _idle(db):
            try:
                db.execute("SELECT 1")
            except psycopg.Error as exc:
                if not connection_lost(exc):
                    raise pg_error(exc, "checking the connection to the catalog") from None
                db.close()
        if db is None or db.closed or db.broken:  # never opened, or the server restarted
            if db is not None:
                db.close()
            self._db = db = self._open()
        self._used_at = now
        return db

    def lost(self) -> bool:
        """Whether the connection was lost (rule 3: the failed read may run once more)."""
        return self._db is not None and (self._db.closed or self._db.broken)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _open(self) -> psycopg.Connection[dict[str, Any]]:
        db = connect(self.url)
        try:
            check_version(version_on(db))  # on the catalog's own connection: no second one
            if not self.writable:
                db.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            db.close()
            raise pg_error(exc, "connecting to the catalog") from None
        except BaseException:
            db.close()
            raise
        return db


def _idle(db: psycopg.Connection[dict[str, Any]]) -> bool:
    """Open and outside any transaction."""
    return not (db.closed or db.broken) and db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def check_version(version: int) -> None:
    """``StorageError`` unless ``version`` is the schema this code knows."""
    if version > LATEST:
        raise StorageError(
            "schema_newer",
            f"the catalog database's schema is at version {version}, newer than"
            f" this ooma-moh knows ({LATEST}): upgrade ooma-moh on this host",
        )
    if version != LATEST:
        raise StorageError(
            "schema_outdated",
            f"the catalog database's schema is at version {version}; this"
            f" ooma-moh needs {LATEST}: run `ooma-moh db upgrade`",
        )


def version_on(db: psycopg.Connection[dict[str, Any]]) -> int:
    try:
        if db.execute("SELECT to_regclass('schema_migrations') AS t").fetchone()["t"] is None:  # type: ignore[index]
            return 0
        row = db.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations").fetchone()
        return int(row["v"]) if row else 0
    except psycopg.Error as exc:
        raise pg_error(exc, "reading the catalog's schema version") from None


def schema_version(url: str) -> int:
    """The schema version of the catalog database (0: no ooma-moh schema yet)."""
    with contextlib.closing(connect(url)) as db:
        return version_on(db)


def upgrade(url: str) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction under the schema
    lock (two hosts upgrading at once apply each version once); returns the versions applied."""
    applied = []
    with contextlib.closing(connect(url)) as db:
        try:
            db.execute("SET statement_timeout = 0")  # a migration, or the wait for another host's, may be long
            for version, sql in migrations():
                with db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                    )
                    if db.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
                        continue
                    db.execute(sql.encode())
                    db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                    applied.append(version)
        except psycopg.Error as exc:
            raise pg_error(exc, "upgrading the catalog's schema", writing=True) from None
    return applied
