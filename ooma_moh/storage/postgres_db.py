"""The PostgreSQL catalog database: connecting, its schema versions (``migrations/NNNN_*.sql``,
applied by ``ooma-moh db upgrade`` under an advisory lock, one transaction per version), and how
psycopg's errors become :class:`~ooma_moh.errors.StorageError` (the only place they are translated;
:mod:`.postgres` and :mod:`.nodes` use it)."""

from __future__ import annotations

import contextlib
import re
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


def pg_error(exc: psycopg.Error, doing: str) -> StorageError:
    """The :class:`StorageError` for a psycopg failure while ``doing`` something."""
    state = exc.sqlstate or ""
    for prefix, (reason, text) in PG_ERRORS.items():
        if state.startswith(prefix):
            return StorageError(reason, f"{text} (while {doing}); nothing was changed")
    if isinstance(exc, psycopg.OperationalError):
        return StorageError(
            "catalog_unreachable",
            f"the catalog database cannot be reached (while {doing}): {_first_line(exc)}; nothing was changed",
        )
    return StorageError(
        "catalog_error", f"the catalog database failed while {doing} ({_first_line(exc)}); nothing was changed"
    )


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
            raise pg_error(exc, "upgrading the catalog's schema") from None
    return applied
