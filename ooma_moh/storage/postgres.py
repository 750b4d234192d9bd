"""The catalog on PostgreSQL (``OOMA_MOH_DATABASE_URL=postgresql://…``): one catalog for several
API/CLI hosts and the cluster's agents, with the same behaviour as the embedded SQLite catalog.

The schema is versioned (``migrations/NNNN_*.sql``) and changed only by ``ooma-moh db upgrade``,
under an advisory lock, one transaction per version; a catalog whose schema is not current is
refused with what to run. Each public method is one transaction; every change to one tenant
holds that tenant's advisory lock, so two hosts uploading for one tenant at once end on one of
the uploads, the other's rows removed (no lost update, nothing left dangling). psycopg errors are
translated to ``StorageError`` by :mod:`.postgres_db`.

Its connection is a :class:`~.postgres_db.KeptConnection`: it survives a restart or failover of
the server without a failed call, and with ``connect_now=False`` (the hold resolvers of ``serve
ari``/``serve agi``) it is opened at the first call, so a process starts while the database is down.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from ..credentials import ApiToken, BrowserSession, LoginLink
from ..errors import StorageError
from ..model import Disclaimer, MohSetting, Rendition, TenantMoh, UploadedFile
from .base import AuditEntry
from .postgres_db import KeptConnection, pg_error
from .sql_history import Row, SqlHistory
from .sql_holdstats import SqlHoldStats

KEEP_ENDED = timedelta(days=30)


P = ParamSpec("P")
R = TypeVar("R")


def read(method: Callable[Concatenate[PostgresCatalog, P], R]) -> Callable[Concatenate[PostgresCatalog, P], R]:
    """A read, run once more on a new connection when its connection was lost mid-way (rule 3 of
    :class:`~.postgres_db.KeptConnection`), so not checked first when idle (rule 2's exception)."""

    @functools.wraps(method)
    def once_more_if_lost(self: PostgresCatalog, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self._reads += 1
        try:
            return method(self, *args, **kwargs)
        except StorageError:
            if not self._link.lost():
                raise
            return method(self, *args, **kwargs)
        finally:
            self._reads -= 1

    return once_more_if_lost


class PostgresCatalog(SqlHistory, SqlHoldStats):
    """:class:`~ooma_moh.storage.base.Catalog` on PostgreSQL. ``writable=False`` runs every
    transaction read-only."""

    _JOIN = "string_agg"

    def __init__(self, url: str, *, writable: bool = True, connect_now: bool = True) -> None:
        self.url, self.writable = url, writable
        self._link = KeptConnection(url, writable=writable, connect_now=connect_now)
        self._reads = 0  # inside a @read: run once more if its connection was lost, so not checked

    def _conn(self, *, ping: bool = False) -> psycopg.Connection[dict[str, Any]]:
        return self._link.get(ping=ping, idle_ping=not self._reads)

    def close(self) -> None:
        """Close the connection."""
        self._link.close()

    @contextlib.contextmanager
    def _write(self, tenant_id: str | None = None) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        try:
            db = self._conn(ping=True)  # a write is never retried: its connection is checked first
        except StorageError as exc:
            raise StorageError(exc.reason, f"{exc}; nothing was changed") from None
        try:
            with db.transaction():
                if tenant_id is not None:  # one change to a tenant at a time, across hosts
                    db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (tenant_id,))
                yield db
        except psycopg.Error as exc:
            raise pg_error(exc, "writing the catalog", writing=True) from None

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """The reads inside see the catalog as of one moment (REPEATABLE READ): a tenant's row and
        its upload's are separate statements, and a change another host commits between them
        must not be seen half (found under load: the upload row already deleted, a ValueError)."""
        db = self._conn()
        if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            yield  # already inside one transaction
            return
        try:
            with db.transaction():
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield
        except psycopg.Error as exc:
            raise pg_error(exc, "reading the catalog") from None

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        try:
            return self._conn().execute(sql.encode(), params).fetchall()
        except psycopg.Error as exc:
            raise pg_error(exc, "reading the catalog") from None

    # -- the hooks of SqlHistory --------------------------------------------------------------------
    def _exec(self, db: psycopg.Connection[dict[str, Any]], sql: str, params: Sequence[object] = ()) -> list[Row]:
        cursor = db.execute(sql.replace("?", "%s").encode(), tuple(params))
        return cursor.fetchall() if cursor.description else []

    def _select(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._query(sql.replace("?", "%s"), tuple(params))

    def _json_param(self, value: object) -> object:
        return None if value is None else Jsonb(value)

    @read
    def get(self, tenant_id: str) -> TenantMoh | None:
        with self._snapshot():
            found = self._tenants("WHERE tenant_id = ?", (tenant_id,))
            return found[0] if found else None

    @read
    def list(self) -> builtins.list[TenantMoh]:
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
        with self._write(tenant_id) as db:
            row = db.execute(
                "INSERT INTO uploads (tenant_id, original_name, size, sha256, duration_ms, container, uploaded_at,"
                " accepted_by, accepted_at, disclaimer_sha256, disclaimer_version, analysis)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    tenant_id,
                    upload.original_name,
                    upload.size,
                    upload.sha256,
                    upload.duration_ms,
                    upload.container,
                    upload.uploaded_at,
                    disclaimer.accepted_by,
                    disclaimer.accepted_at,
                    disclaimer.sha256,
                    disclaimer.text_version,
                    self._json_param(upload.analysis),
                ),
            ).fetchone()
            assert row is not None
            upload_id = row["id"]
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO renditions (upload_id, extension, sample_rate, size, sha256)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [(upload_id, r.extension, r.sample_rate, r.size, r.sha256) for r in renditions],
                )
            previous = self._point_tenant(db, tenant_id, MohSetting.FILE, upload_id, upload.uploaded_at)
            if draft_id is not None:
                db.execute("DELETE FROM drafts WHERE id = %s AND tenant_id = %s", (draft_id, tenant_id))
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
                    "accepted_at": disclaimer.accepted_at.isoformat(timespec="microseconds"),
                    "replaced_upload": previous,
                },
            )
        result = self.get(tenant_id)
        assert result is not None
        return result

    def set_default(self, tenant_id: str, at: datetime) -> TenantMoh | None:
        with self._write(tenant_id) as db:
            if not db.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,)).fetchone():
                return None
            previous = self._point_tenant(db, tenant_id, MohSetting.DEFAULT, None, at)
            self._audit(db, at, tenant_id, "delete", {"removed_upload": previous})
        return self.get(tenant_id)

    def _audit(
        self, db: psycopg.Connection[dict[str, Any]], at: datetime, tenant_id: str, action: str, detail: dict[str, Any]
    ) -> None:
        db.execute(
            "INSERT INTO audit (at, tenant_id, action, detail) VALUES (%s, %s, %s, %s)",
            (at, tenant_id, action, Jsonb(detail)),
        )

    @read
    def endpoint_tenant(self, endpoint: str) -> str | None:
        rows = self._query("SELECT tenant_id FROM endpoints WHERE endpoint = %s", (endpoint,))
        return str(rows[0]["tenant_id"]) if rows else None

    def map_endpoint(self, endpoint: str, tenant_id: str | None) -> None:
        with self._write() as db:
            if tenant_id is None:
                db.execute("DELETE FROM endpoints WHERE endpoint = %s", (endpoint,))
            else:
                db.execute(
                    "INSERT INTO endpoints (endpoint, tenant_id) VALUES (%s, %s) ON CONFLICT (endpoint)"
                    " DO UPDATE SET tenant_id = excluded.tenant_id",
                    (endpoint, tenant_id),
                )

    @read
    def endpoints(self) -> dict[str, str]:
        return {r["endpoint"]: r["tenant_id"] for r in self._query("SELECT * FROM endpoints ORDER BY endpoint")}

    def add_token(self, token: ApiToken, secret_sha256: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO tokens (id, scope, tenant_id, secret_sha256, created_at) VALUES (%s, %s, %s, %s, %s)",
                (token.id, token.scope, token.tenant_id, secret_sha256, token.created_at),
            )

    @read
    def token(self, token_id: str) -> tuple[ApiToken, str] | None:
        rows = self._query("SELECT * FROM tokens WHERE id = %s", (token_id,))
        return (_token(rows[0]), rows[0]["secret_sha256"]) if rows else None

    @read
    def tokens(self) -> builtins.list[ApiToken]:
        return [_token(r) for r in self._query("SELECT * FROM tokens ORDER BY created_at, id")]

    def revoke_token(self, token_id: str, at: datetime) -> bool:
        with self._write() as db:
            return (
                db.execute(
                    "UPDATE tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", (at, token_id)
                ).rowcount
                == 1
            )

    def add_login_link(self, link: LoginLink, secret_sha256: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM login_links WHERE expires_at < %s", (link.created_at - KEEP_ENDED,))
            db.execute(
                "INSERT INTO login_links (id, tenant_id, label, secret_sha256, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (link.id, link.tenant_id, link.label, secret_sha256, link.created_at, link.expires_at),
            )

    @read
    def login_link(self, link_id: str) -> tuple[LoginLink, str] | None:
        rows = self._query("SELECT * FROM login_links WHERE id = %s", (link_id,))
        return (_login_link(rows[0]), rows[0]["secret_sha256"]) if rows else None

    def redeem_login_link(self, link_id: str, session: BrowserSession, secret_sha256: str) -> bool:
        with self._write() as db:
            used = db.execute(
                "UPDATE login_links SET used_at = %s WHERE id = %s AND used_at IS NULL"
                " AND revoked_at IS NULL AND expires_at > %s",
                (session.created_at, link_id, session.created_at),
            ).rowcount
            if used != 1:
                return False
            db.execute("DELETE FROM browser_sessions WHERE expires_at < %s", (session.created_at - KEEP_ENDED,))
            db.execute(
                "INSERT INTO browser_sessions (id, tenant_id, label, link_id, secret_sha256, csrf, created_at,"
                " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    session.id,
                    session.tenant_id,
                    session.label,
                    session.link_id,
                    secret_sha256,
                    session.csrf,
                    session.created_at,
                    session.expires_at,
                ),
            )
            return True

    @read
    def browser_session(self, session_id: str) -> tuple[BrowserSession, str] | None:
        rows = self._query("SELECT * FROM browser_sessions WHERE id = %s", (session_id,))
        return (_browser_session(rows[0]), rows[0]["secret_sha256"]) if rows else None

    def end_session(self, session_id: str, at: datetime) -> bool:
        with self._write() as db:
            return (
                db.execute(
                    "UPDATE browser_sessions SET ended_at = %s WHERE id = %s AND ended_at IS NULL", (at, session_id)
                ).rowcount
                == 1
            )

    @read
    def open_sign_ins(self, now: datetime) -> tuple[builtins.list[LoginLink], builtins.list[BrowserSession]]:
        links = [
            _login_link(r)
            for r in self._query(
                "SELECT * FROM login_links WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > %s"
                " ORDER BY created_at, id",
                (now,),
            )
        ]
        sessions = [
            _browser_session(r)
            for r in self._query(
                "SELECT * FROM browser_sessions WHERE ended_at IS NULL AND expires_at > %s ORDER BY created_at, id",
                (now,),
            )
        ]
        return links, sessions

    def sign_out_tenant(self, tenant_id: str, at: datetime) -> tuple[int, int]:
        with self._write() as db:
            links = db.execute(
                "UPDATE login_links SET revoked_at = %s WHERE tenant_id = %s AND used_at IS NULL"
                " AND revoked_at IS NULL",
                (at, tenant_id),
            ).rowcount
            sessions = db.execute(
                "UPDATE browser_sessions SET ended_at = %s WHERE tenant_id = %s AND ended_at IS NULL", (at, tenant_id)
            ).rowcount
            return links, sessions

    @read
    def referenced_blobs(self) -> set[str]:
        with self._snapshot():
            rows = self._query("SELECT sha256 FROM uploads UNION SELECT sha256 FROM renditions")
            return {r["sha256"] for r in rows} | self._draft_blobs()

    @read
    def audit(self, tenant_id: str) -> builtins.list[AuditEntry]:
        return [
            AuditEntry(r["at"], r["tenant_id"], r["action"], r["detail"])
            for r in self._query("SELECT * FROM audit WHERE tenant_id = %s ORDER BY id", (tenant_id,))
        ]


def _token(row: dict[str, Any]) -> ApiToken:
    return ApiToken(row["id"], row["scope"], row["tenant_id"], row["created_at"], row["revoked_at"])


def _login_link(row: dict[str, Any]) -> LoginLink:
    return LoginLink(
        row["id"],
        row["tenant_id"],
        row["label"],
        row["created_at"],
        row["expires_at"],
        row["used_at"],
        row["revoked_at"],
    )


def _browser_session(row: dict[str, Any]) -> BrowserSession:
    return BrowserSession(
        row["id"],
        row["tenant_id"],
        row["label"],
        row["link_id"],
        row["csrf"],
        row["created_at"],
        row["expires_at"],
        row["ended_at"],
    )
