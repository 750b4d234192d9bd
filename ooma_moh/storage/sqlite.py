"""The embedded catalog: one SQLite file with a rollback journal.

Each public method is one transaction (``BEGIN IMMEDIATE`` for writes), so a crash at any point
leaves either the old or the new state. sqlite3 errors are translated to ``StorageError`` here.

Why a rollback journal and not WAL: a reader of a WAL database must be able to create or write
its ``-shm`` file, so read-only commands (``show``, the FastAGI server) failed on a read-only or
full disk, and whichever user opened the catalog first owned the side files. With a rollback
journal a reader needs only read access to the file; writers are rare (uploads, deletes) and
readers wait out a commit with ``busy_timeout``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from ..credentials import ApiToken, BrowserSession, LoginLink
from ..model import Disclaimer, MohSetting, Rendition, TenantMoh, UploadedFile
from .base import AuditEntry
from .sql_history import Row, SqlHistory
from .sql_holdstats import SqlHoldStats
from .sqlite_file import open_catalog_file, storage_error

#: how long used or expired login links and ended sessions are kept (who signed in, when)
KEEP_ENDED = timedelta(days=30)


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _login_link(row: sqlite3.Row) -> LoginLink:
    return LoginLink(
        row["id"],
        row["tenant_id"],
        row["label"],
        datetime.fromisoformat(row["created_at"]),
        datetime.fromisoformat(row["expires_at"]),
        _time(row["used_at"]),
        _time(row["revoked_at"]),
    )


def _browser_session(row: sqlite3.Row) -> BrowserSession:
    return BrowserSession(
        row["id"],
        row["tenant_id"],
        row["label"],
        row["link_id"],
        row["csrf"],
        datetime.fromisoformat(row["created_at"]),
        datetime.fromisoformat(row["expires_at"]),
        _time(row["ended_at"]),
    )


def _token(row: sqlite3.Row) -> ApiToken:
    revoked = row["revoked_at"]
    return ApiToken(
        row["id"],
        row["scope"],
        row["tenant_id"],
        datetime.fromisoformat(row["created_at"]),
        datetime.fromisoformat(revoked) if revoked else None,
    )


class SqliteCatalog(SqlHistory, SqlHoldStats):
    """:class:`~ooma_moh.storage.base.Catalog` on a local SQLite file.

    ``writable=False`` opens it read-only (``mode=ro``): nothing is created, no schema change,
    and it works on a read-only or full filesystem.
    """

    def __init__(self, path: Path, *, writable: bool = True) -> None:
        self.path = path
        self.writable = writable
        self._db = open_catalog_file(path, writable=writable)

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    @contextlib.contextmanager
    def _write(self, tenant_id: str | None = None) -> Iterator[sqlite3.Connection]:  # noqa: ARG002
        """One write transaction (``tenant_id`` is for PostgreSQL's per-tenant lock: SQLite has one
        writer at a time anyway)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # may fail (disk full): then roll back as well
            finally:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise storage_error(exc, "writing the catalog") from None

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """The reads inside are one read transaction: a tenant's row and its upload's are separate
        statements, and a change committed between them must not be seen half."""
        try:
            nested = self._db.in_transaction  # a closed connection raises here too
            if not nested:
                self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading the catalog") from None
        if nested:
            yield  # already inside one transaction
            return
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("COMMIT")  # only reads: nothing to keep or lose

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        try:
            cursor = self._db.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading the catalog") from None

    # -- the hooks of SqlHistory --------------------------------------------------------------------
    def _exec(self, db: sqlite3.Connection, sql: str, params: Sequence[object] = ()) -> list[Row]:
        cursor = db.execute(sql, tuple(params))
        cursor.row_factory = sqlite3.Row
        return cursor.fetchall()

    def _select(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._query(sql, tuple(params))

    def _time_param(self, value: datetime) -> object:
        return _ts(value)

    def _time_cell(self, value: str) -> datetime:
        return datetime.fromisoformat(value)

    def _json_param(self, value: object) -> object:
        return None if value is None else json.dumps(value, sort_keys=True)

    def _json_cell(self, value: str | None) -> object:
        return None if value is None else json.loads(value)

    def get(self, tenant_id: str) -> TenantMoh | None:
        with self._snapshot():
            found = self._tenants("WHERE tenant_id = ?", (tenant_id,))
            return found[0] if found else None

    def list(self) -> list[TenantMoh]:
        with self._snapshot():
            return self._tenants()

    def save_upload(
        self,
        tenant_id: str,
        upload: UploadedFile,
        disclaimer: Disclaimer,
        renditions: tuple[Rendition, ...],
        draft_id: str | None = None,
    ) -> TenantMoh:
        with self._write() as db:
            upload_id = db.execute(
                "INSERT INTO uploads (tenant_id, original_name, size, sha256, duration_ms, container,"
                " uploaded_at, accepted_by, accepted_at, disclaimer_sha256, disclaimer_version, analysis)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant_id,
                    upload.original_name,
                    upload.size,
                    upload.sha256,
                    upload.duration_ms,
                    upload.container,
                    _ts(upload.uploaded_at),
                    disclaimer.accepted_by,
                    _ts(disclaimer.accepted_at),
                    disclaimer.sha256,
                    disclaimer.text_version,
                    self._json_param(upload.analysis),
                ),
            ).lastrowid
            db.executemany(
                "INSERT INTO renditions (upload_id, extension, sample_rate, size, sha256) VALUES (?, ?, ?, ?, ?)",
                [(upload_id, r.extension, r.sample_rate, r.size, r.sha256) for r in renditions],
            )
            previous = self._point_tenant(db, tenant_id, MohSetting.FILE, upload_id, upload.uploaded_at)
            if draft_id is not None:
                db.execute("DELETE FROM drafts WHERE id = ? AND tenant_id = ?", (draft_id, tenant_id))
            self._audit(
                db,
                upload.uploaded_at,
                tenant_id,
                "upload",
                {
                    "original_name": upload.original_name,
                    "size": upload.size,
                    "sha256": upload.sha256,
                    "duration_ms": upload.duration_ms,
                    "accepted_by": disclaimer.accepted_by,
                    "disclaimer_version": disclaimer.text_version,
                    "accepted_at": _ts(disclaimer.accepted_at),
                    "replaced_upload": previous,
                },
            )
        result = self.get(tenant_id)
        assert result is not None
        return result

    def set_default(self, tenant_id: str, at: datetime) -> TenantMoh | None:
        with self._write() as db:
            if not db.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone():
                return None
            previous = self._point_tenant(db, tenant_id, MohSetting.DEFAULT, None, at)
            self._audit(db, at, tenant_id, "delete", {"removed_upload": previous})
        return self.get(tenant_id)

    def _audit(
        self, db: sqlite3.Connection, at: datetime, tenant_id: str, action: str, detail: dict[str, object]
    ) -> None:
        db.execute(
            "INSERT INTO audit (at, tenant_id, action, detail) VALUES (?, ?, ?, ?)",
            (_ts(at), tenant_id, action, json.dumps(detail, sort_keys=True)),
        )

    def endpoint_tenant(self, endpoint: str) -> str | None:
        rows = self._query("SELECT tenant_id FROM endpoints WHERE endpoint = ?", (endpoint,))
        return rows[0][0] if rows else None

    def map_endpoint(self, endpoint: str, tenant_id: str | None) -> None:
        with self._write() as db:
            if tenant_id is None:
                db.execute("DELETE FROM endpoints WHERE endpoint = ?", (endpoint,))
            else:
                db.execute(
                    "INSERT INTO endpoints (endpoint, tenant_id) VALUES (?, ?) ON CONFLICT (endpoint)"
                    " DO UPDATE SET tenant_id = excluded.tenant_id",
                    (endpoint, tenant_id),
                )

    def endpoints(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._query("SELECT endpoint, tenant_id FROM endpoints ORDER BY endpoint")}

    def add_token(self, token: ApiToken, secret_sha256: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO tokens (id, scope, tenant_id, secret_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
                (token.id, token.scope, token.tenant_id, secret_sha256, _ts(token.created_at)),
            )

    def token(self, token_id: str) -> tuple[ApiToken, str] | None:
        rows = self._query("SELECT * FROM tokens WHERE id = ?", (token_id,))
        return (_token(rows[0]), rows[0]["secret_sha256"]) if rows else None

    def tokens(self) -> builtins.list[ApiToken]:
        return [_token(r) for r in self._query("SELECT * FROM tokens ORDER BY created_at, id")]

    def revoke_token(self, token_id: str, at: datetime) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (_ts(at), token_id)
            )
            return cursor.rowcount == 1

    def add_login_link(self, link: LoginLink, secret_sha256: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM login_links WHERE expires_at < ?", (_ts(link.created_at - KEEP_ENDED),))
            db.execute(
                "INSERT INTO login_links (id, tenant_id, label, secret_sha256, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (link.id, link.tenant_id, link.label, secret_sha256, _ts(link.created_at), _ts(link.expires_at)),
            )

    def login_link(self, link_id: str) -> tuple[LoginLink, str] | None:
        rows = self._query("SELECT * FROM login_links WHERE id = ?", (link_id,))
        return (_login_link(rows[0]), rows[0]["secret_sha256"]) if rows else None

    def redeem_login_link(self, link_id: str, session: BrowserSession, secret_sha256: str) -> bool:
        with self._write() as db:
            row = db.execute(
                "SELECT expires_at FROM login_links WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL", (link_id,)
            ).fetchone()
            if row is None or datetime.fromisoformat(row[0]) <= session.created_at:
                return False
            db.execute("UPDATE login_links SET used_at = ? WHERE id = ?", (_ts(session.created_at), link_id))
            db.execute("DELETE FROM browser_sessions WHERE expires_at < ?", (_ts(session.created_at - KEEP_ENDED),))
            db.execute(
                "INSERT INTO browser_sessions (id, tenant_id, label, link_id, secret_sha256, csrf,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.tenant_id,
                    session.label,
                    session.link_id,
                    secret_sha256,
                    session.csrf,
                    _ts(session.created_at),
                    _ts(session.expires_at),
                ),
            )
            return True

    def browser_session(self, session_id: str) -> tuple[BrowserSession, str] | None:
        rows = self._query("SELECT * FROM browser_sessions WHERE id = ?", (session_id,))
        return (_browser_session(rows[0]), rows[0]["secret_sha256"]) if rows else None

    def end_session(self, session_id: str, at: datetime) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE browser_sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (_ts(at), session_id)
            )
            return cursor.rowcount == 1

    def open_sign_ins(self, now: datetime) -> tuple[builtins.list[LoginLink], builtins.list[BrowserSession]]:
        links = [
            _login_link(r)
            for r in self._query(
                "SELECT * FROM login_links WHERE used_at IS NULL AND revoked_at IS NULL ORDER BY created_at, id"
            )
        ]
        sessions = [
            _browser_session(r)
            for r in self._query("SELECT * FROM browser_sessions WHERE ended_at IS NULL ORDER BY created_at, id")
        ]
        return [x for x in links if x.refusal(now) is None], [x for x in sessions if x.open_at(now)]

    def sign_out_tenant(self, tenant_id: str, at: datetime) -> tuple[int, int]:
        with self._write() as db:
            links = db.execute(
                "UPDATE login_links SET revoked_at = ? WHERE tenant_id = ? AND used_at IS NULL AND revoked_at IS NULL",
                (_ts(at), tenant_id),
            ).rowcount
            sessions = db.execute(
                "UPDATE browser_sessions SET ended_at = ? WHERE tenant_id = ? AND ended_at IS NULL",
                (_ts(at), tenant_id),
            ).rowcount
            return links, sessions

    def referenced_blobs(self) -> set[str]:
        with self._snapshot():
            rows = self._query("SELECT sha256 FROM uploads UNION SELECT sha256 FROM renditions")
            return {row[0] for row in rows} | self._draft_blobs()

    def audit(self, tenant_id: str) -> builtins.list[AuditEntry]:
        return [
            AuditEntry(datetime.fromisoformat(r["at"]), r["tenant_id"], r["action"], json.loads(r["detail"]))
            for r in self._query("SELECT * FROM audit WHERE tenant_id = ? ORDER BY id", (tenant_id,))
        ]
