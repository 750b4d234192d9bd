"""The embedded catalog's file: opening it, its schema versions, its errors.

**Schema versions** are recorded in the file (``PRAGMA user_version``), as PostgreSQL's are in
``schema_version``: :data:`MIGRATIONS` is the one history, applied in order by :func:`migrate`, each
version in one transaction with its number (a writer killed half-way leaves the previous version
whole). A catalog made before versions were recorded (``user_version`` 0 with tables) is
recognised by its columns and brought into the history at the version it matches. A reader never
changes the schema: it reads an older version as it is (a missing column reads as NULL) and
refuses a newer one.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from ..errors import StorageError

#: version -> the statements that bring the previous version to it
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    original_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    container TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    accepted_by TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    disclaimer_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS renditions (
    upload_id INTEGER NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    extension TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (upload_id, extension)
);
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    setting TEXT NOT NULL CHECK (setting IN ('default', 'file')),
    upload_id INTEGER REFERENCES uploads(id),
    updated_at TEXT NOT NULL,
    CHECK ((setting = 'file') = (upload_id IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit (tenant_id, id);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'operator')),
    tenant_id TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    CHECK ((scope = 'tenant') = (tenant_id IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_links (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    label TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS browser_sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    label TEXT NOT NULL,
    link_id TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    ended_at TEXT
);
""",
    ),
    # the text version of the disclaimer each upload accepted
    (2, "ALTER TABLE uploads ADD COLUMN disclaimer_version TEXT;"),
    # issue 21: each upload's analysis, the previous file kept for "restore", drafts
    (
        3,
        """
ALTER TABLE uploads ADD COLUMN analysis TEXT;
ALTER TABLE tenants ADD COLUMN previous_upload_id INTEGER REFERENCES uploads(id);
CREATE TABLE IF NOT EXISTS drafts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    original_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    container TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    analysis TEXT,
    renditions TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drafts_tenant ON drafts (tenant_id, expires_at);
""",
    ),
    # issue 22: hold statistics per tenant and UTC day (ooma_moh/storage/sql_holdstats.py)
    (
        4,
        """
CREATE TABLE IF NOT EXISTS hold_days (
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    holds INTEGER NOT NULL,
    milliseconds INTEGER NOT NULL,
    hung_up INTEGER NOT NULL,
    fallback INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
);
CREATE INDEX IF NOT EXISTS hold_days_day ON hold_days (day);
CREATE TABLE IF NOT EXISTS hold_buckets (
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    holds INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, bucket)
);
CREATE INDEX IF NOT EXISTS hold_buckets_day ON hold_buckets (day);
""",
    ),
)
LATEST = MIGRATIONS[-1][0]


def version_of(db: sqlite3.Connection) -> int:
    """The catalog's schema version; a catalog made before versions were recorded is placed in
    the history by its columns."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version:
        return version
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tenants'").fetchone() is None:
        return 0
    columns = {row[1] for row in db.execute("PRAGMA table_info(uploads)")}
    return 2 if "disclaimer_version" in columns else 1


def migrate(db: sqlite3.Connection) -> list[int]:
    """Apply the versions the catalog lacks (writers only); returns those applied.
    ``StorageError`` ``schema_newer`` for a catalog of a newer ooma-moh.

    The whole upgrade holds the write lock (``BEGIN IMMEDIATE``) and reads the version again
    under it: two processes opening a new or older catalog at once apply each version once."""
    if db.execute("PRAGMA user_version").fetchone()[0] == LATEST:
        return []  # the common case: no lock taken
    db.execute("BEGIN IMMEDIATE")
    try:
        version = version_of(db)
        check_version(version)
        applied = []
        if version and not db.execute("PRAGMA user_version").fetchone()[0]:
            # made before versions were recorded: tables added since its release are created
            # (version 1's statements only create what is missing), then its version recorded
            _run(db, MIGRATIONS[0][1])
        for number, statements in MIGRATIONS:
            if number > version:
                _run(db, statements)
                applied.append(number)
        db.execute(f"PRAGMA user_version = {LATEST:d}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return applied


_ADD_COLUMN = re.compile(r"\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.I)


def _run(db: sqlite3.Connection, statements: str) -> None:
    """Each statement of a migration, inside the caller's transaction (``executescript`` would
    commit it first). A column the catalog has already is not added again: a catalog made before
    versions were recorded is placed in the history by its columns, and may have some of a later
    version's."""
    for statement in statements.split(";"):
        if not statement.strip():
            continue
        adding = _ADD_COLUMN.match(statement)
        if adding and adding[2] in {row[1] for row in db.execute(f"PRAGMA table_info({adding[1]})")}:
            continue
        db.execute(statement)


def check_version(version: int) -> None:
    """``StorageError`` ``schema_newer`` unless this ooma-moh knows ``version``."""
    if version > LATEST:
        raise StorageError(
            "schema_newer",
            f"the catalog's schema is at version {version}, newer than this ooma-moh knows ({LATEST}):"
            " upgrade ooma-moh on this host",
        )


#: sqlite3 error name -> (StorageError reason, what happened)
SQLITE_ERRORS = {
    "SQLITE_FULL": ("disk_full", "the server's disk is full"),
    # before SQLITE_READONLY, which it starts with: a process that may write rolls it back
    "SQLITE_READONLY_ROLLBACK": (
        "hot_journal",
        "a writer crashed mid-commit and left the catalog's journal;"
        " this process may only read it, so it cannot roll it back: the next ooma-moh"
        " process that may write it does (start ooma-moh-http, or run `ooma-moh sync`"
        " as the service user)",
    ),
    "SQLITE_READONLY": ("read_only", "the catalog is read-only for this process"),
    "SQLITE_CANTOPEN": ("permission", "the catalog cannot be opened (permissions?)"),
    "SQLITE_PERM": ("permission", "permission denied on the catalog"),
    "SQLITE_IOERR": ("io_error", "an input/output error on the catalog"),
    "SQLITE_CORRUPT": ("catalog_damaged", "the catalog is damaged: restore it from a backup"),
    "SQLITE_NOTADB": ("catalog_damaged", "the catalog file is not a database: restore it from a backup"),
    "SQLITE_BUSY": ("busy", "the catalog stayed locked by another process"),
}


def storage_error(exc: sqlite3.Error, doing: str) -> StorageError:
    """The :class:`StorageError` for a sqlite3 failure while ``doing`` something."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, (reason, text) in SQLITE_ERRORS.items():
        if name.startswith(prefix):
            return StorageError(reason, f"{text} (while {doing}); nothing was changed")
    return StorageError("catalog_error", f"the catalog failed while {doing} ({exc}); nothing was changed")


def catalog_exists(path: Path) -> bool:
    """Whether ``path`` holds an ooma-moh catalog (not missing, empty, or another database).
    ``StorageError`` if it is not a readable SQLite file at all."""
    try:
        if path.stat().st_size == 0:
            return False
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError.from_errno(exc.errno, "opening the catalog") from None
    try:
        db = open_read_only(path)
        try:
            return (
                db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tenants'").fetchone()
                is not None
            )
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise storage_error(exc, "opening the catalog") from None


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``) that has read the schema. A hot journal (a writer
    killed mid-commit) makes every read-only read fail until a read-write connection rolls it
    back: if this process may write the file, it does that once here, then reads."""
    for attempt in (1, 2):
        db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error as exc:
            db.close()
            hot = (
                getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY_ROLLBACK"
                and os.access(path, os.W_OK)
                and os.access(path.parent, os.W_OK | os.X_OK)
            )
            if attempt == 2 or not hot:
                raise
            rollback = sqlite3.connect(path, timeout=30)  # reading through it rolls the journal back
            try:
                rollback.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                rollback.close()
    raise AssertionError("unreachable")


def open_catalog_file(path: Path, *, writable: bool) -> sqlite3.Connection:
    """The catalog's connection: a writer's creates the file (0640: it holds CSRF values and
    token hashes) and brings its schema to the latest version; a reader's is read-only and refuses
    a newer schema. A catalog refused leaves no connection open; errors are ``StorageError``."""
    db: sqlite3.Connection | None = None
    try:
        if not writable:
            db = open_read_only(path)
            check_version(version_of(db))
            db.execute("SELECT 1 FROM tenants LIMIT 1")
            return db
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        if created and path.stat().st_uid == os.geteuid():
            # not world-readable, even under root's umask 022 (runuser); the group (Asterisk's)
            # reads it for the classic AGI
            os.chmod(path, 0o640)
        db.execute("PRAGMA journal_mode=DELETE")  # also converts a WAL catalog
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        migrate(db)
        return db
    except BaseException as exc:
        if db is not None:
            db.close()
        if isinstance(exc, OSError):
            raise StorageError.from_errno(exc.errno, "opening the catalog") from None
        if isinstance(exc, sqlite3.Error):
            raise storage_error(exc, "opening the catalog") from None
        raise
