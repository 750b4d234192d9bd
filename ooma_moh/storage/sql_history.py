"""What the two SQL catalogs (SQLite, PostgreSQL) share about a tenant's files over time: the
*previous* file kept for "restore", and *drafts* (analysed uploads not yet saved).

The rules, in order:

1. A change that replaces or removes a tenant's file (upload, draft saved, delete, restore) keeps
   that file as the tenant's ``previous``; the file ``previous`` held before is dropped (its rows
   go; its blobs become unreferenced and are collected after the grace period).
2. A restore makes ``previous`` current again with the disclaimer accepted anew, and the file it
   replaces (if any) becomes ``previous``: two restores in a row come back to the start.
3. A tenant holds at most ``limit`` drafts that have not expired; expired drafts are invisible
   (as if they did not exist) and are deleted by the next draft added or by the blob collection.
4. A draft is its tenant's only: every read and change names the tenant.
5. Saving a draft removes it in the transaction that makes it current.

The back ends differ only in placeholders, time and JSON types: :class:`SqlHistory` writes its
statements with ``?`` and each back end supplies the hooks below.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..model import Disclaimer, Draft, MohSetting, Rendition, TenantMoh, UploadedFile

#: a row by column name: ``sqlite3.Row`` or psycopg's dict row (both have ``keys()``)
Row = Any


class SqlBackEnd:
    """The hooks each SQL back end supplies to the statements its mixins share (``?``
    placeholders): :class:`SqlHistory` here, :class:`~.sql_holdstats.SqlHoldStats`."""

    def _write(self, tenant_id: str | None = None) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _exec(self, db: Any, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement (``?`` placeholders) inside a write; its rows, if it has any."""
        raise NotImplementedError

    def _select(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one query (``?`` placeholders) outside a write."""
        raise NotImplementedError

    def _time_param(self, value: datetime) -> object:
        """A time as the database takes it (PostgreSQL: as it is)."""
        return value

    def _time_cell(self, value: Any) -> datetime:
        """A time as the database gives it (PostgreSQL: already a datetime)."""
        return value  # type: ignore[no-any-return]

    def _json_param(self, value: object) -> object:
        """A JSON value as the database takes it."""
        raise NotImplementedError

    def _json_cell(self, value: Any) -> Any:
        """A JSON value as the database gives it (PostgreSQL's JSONB: already decoded)."""
        return value


class SqlHistory(SqlBackEnd):
    """Mixin of :class:`~.sqlite.SqliteCatalog` and :class:`~.postgres.PostgresCatalog`."""

    def get(self, tenant_id: str) -> TenantMoh | None:
        raise NotImplementedError

    def _audit(self, db: Any, at: datetime, tenant_id: str, action: str, detail: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- reading rows ----------------------------------------------------------------------------
    def _upload_of(self, row: Row) -> UploadedFile:
        analysis = self._json_cell(row["analysis"]) if "analysis" in row.keys() else None  # noqa: SIM118
        return UploadedFile(
            row["original_name"],
            row["size"],
            row["sha256"],
            row["duration_ms"],
            row["container"],
            self._time_cell(row["uploaded_at"]),
            analysis,
        )

    def _tenants(self, where: str = "", params: Sequence[object] = ()) -> list[TenantMoh]:
        """The tenants whose ``tenants`` rows match ``where`` (``?`` placeholders), by id, in three
        queries however many they are: their rows, the uploads they name (current and previous),
        the renditions of the current ones. Run inside the back end's snapshot."""
        rows = self._select(f"SELECT * FROM tenants {where} ORDER BY tenant_id", params)
        if not rows:
            return []
        named, named_params = f"SELECT upload_id FROM tenants {where}", tuple(params)
        if "previous_upload_id" in rows[0].keys():  # noqa: SIM118 - a column since schema 3/0004
            named, named_params = f"{named} UNION SELECT previous_upload_id FROM tenants {where}", named_params * 2
        uploads = {r["id"]: r for r in self._select(f"SELECT * FROM uploads WHERE id IN ({named})", named_params)}
        renditions: dict[int, list[Rendition]] = {}
        for r in self._select(
            f"SELECT * FROM renditions WHERE upload_id IN (SELECT upload_id FROM tenants {where})"
            " ORDER BY upload_id, extension",
            params,
        ):
            renditions.setdefault(r["upload_id"], []).append(
                Rendition(r["extension"], r["sample_rate"], r["size"], r["sha256"])
            )
        return [self._tenant_of(row, uploads, renditions) for row in rows]

    def _tenant_of(self, row: Row, uploads: dict[int, Row], renditions: dict[int, list[Rendition]]) -> TenantMoh:
        setting, updated_at = MohSetting(row["setting"]), self._time_cell(row["updated_at"])
        previous_id = row["previous_upload_id"] if "previous_upload_id" in row.keys() else None  # noqa: SIM118
        previous = self._upload_of(uploads[previous_id]) if previous_id in uploads else None
        if row["upload_id"] is None:
            return TenantMoh(row["tenant_id"], setting, updated_at=updated_at, previous=previous)
        up = uploads[row["upload_id"]]
        disclaimer = Disclaimer(
            up["accepted_by"],
            self._time_cell(up["accepted_at"]),
            up["disclaimer_sha256"],
            up["disclaimer_version"] if "disclaimer_version" in up.keys() else None,  # noqa: SIM118 - schema 2
        )
        return TenantMoh(
            row["tenant_id"],
            setting,
            self._upload_of(up),
            disclaimer,
            tuple(renditions.get(row["upload_id"], ())),
            updated_at,
            previous,
        )

    # -- rule 1: what a change keeps ---------------------------------------------------------------
    def _point_tenant(
        self, db: Any, tenant_id: str, setting: MohSetting, upload_id: int | None, at: datetime
    ) -> str | None:
        """Point the tenant at ``upload_id``; keep the file it had as ``previous`` and drop the
        one ``previous`` held (rule 1); return the replaced file's sha256."""
        rows = self._exec(
            db,
            "SELECT t.upload_id, t.previous_upload_id, u.sha256 FROM tenants t"
            " LEFT JOIN uploads u ON u.id = t.upload_id WHERE t.tenant_id = ?",
            (tenant_id,),
        )
        current, older, current_sha = (
            (rows[0]["upload_id"], rows[0]["previous_upload_id"], rows[0]["sha256"]) if rows else (None, None, None)
        )
        keep = current if current is not None and current != upload_id else older
        if keep == upload_id:
            keep = None
        self._exec(
            db,
            "INSERT INTO tenants (tenant_id, setting, upload_id, previous_upload_id, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET setting = excluded.setting,"
            " upload_id = excluded.upload_id, previous_upload_id = excluded.previous_upload_id,"
            " updated_at = excluded.updated_at",
            (tenant_id, setting.value, upload_id, keep, self._time_param(at)),
        )
        if older is not None and older not in (keep, upload_id):
            self._exec(db, "DELETE FROM uploads WHERE id = ?", (older,))
        return None if current is None or current == upload_id else str(current_sha)

    # -- rule 2: restore ---------------------------------------------------------------------------
    def restore_previous(self, tenant_id: str, disclaimer: Disclaimer, at: datetime) -> TenantMoh | None:
        """Make the tenant's previous file current again, ``disclaimer`` accepted anew (rule 2);
        None (nothing changed) when there is none."""
        with self._write(tenant_id) as db:
            rows = self._exec(
                db,
                "SELECT p.id, p.sha256, p.original_name FROM tenants t JOIN uploads p ON p.id = t.previous_upload_id"
                " WHERE t.tenant_id = ?",
                (tenant_id,),
            )
            if not rows:
                return None
            restored = rows[0]
            self._exec(
                db,
                "UPDATE uploads SET accepted_by = ?, accepted_at = ?, disclaimer_version = ? WHERE id = ?",
                (
                    disclaimer.accepted_by,
                    self._time_param(disclaimer.accepted_at),
                    disclaimer.text_version,
                    restored["id"],
                ),
            )
            replaced = self._point_tenant(db, tenant_id, MohSetting.FILE, restored["id"], at)
            self._audit(
                db,
                at,
                tenant_id,
                "restore",
                {
                    "sha256": restored["sha256"],
                    "original_name": restored["original_name"],
                    "accepted_by": disclaimer.accepted_by,
                    "disclaimer_version": disclaimer.text_version,
                    "replaced_upload": replaced,
                },
            )
        return self.get(tenant_id)

    # -- rules 3-5: drafts -------------------------------------------------------------------------
    def add_draft(self, draft: Draft, limit: int, now: datetime) -> bool:
        """Store ``draft`` unless its tenant already holds ``limit`` live drafts (False)."""
        with self._write(draft.tenant_id) as db:
            self._exec(db, "DELETE FROM drafts WHERE expires_at <= ?", (self._time_param(now),))
            held = self._exec(db, "SELECT count(*) AS n FROM drafts WHERE tenant_id = ?", (draft.tenant_id,))
            if int(held[0]["n"]) >= limit:
                return False
            up = draft.upload
            self._exec(
                db,
                "INSERT INTO drafts (id, tenant_id, original_name, size, sha256, duration_ms, container,"
                " created_at, expires_at, analysis, renditions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    draft.draft_id,
                    draft.tenant_id,
                    up.original_name,
                    up.size,
                    up.sha256,
                    up.duration_ms,
                    up.container,
                    self._time_param(up.uploaded_at),
                    self._time_param(draft.expires_at),
                    self._json_param(up.analysis),
                    self._json_param([[r.extension, r.sample_rate, r.size, r.sha256] for r in draft.renditions]),
                ),
            )
        return True

    def draft(self, tenant_id: str, draft_id: str, now: datetime) -> Draft | None:
        """The tenant's draft ``draft_id`` if it has not expired (rules 3, 4)."""
        rows = self._select(
            "SELECT * FROM drafts WHERE id = ? AND tenant_id = ? AND expires_at > ?",
            (draft_id, tenant_id, self._time_param(now)),
        )
        if not rows:
            return None
        row = rows[0]
        upload = UploadedFile(
            row["original_name"],
            row["size"],
            row["sha256"],
            row["duration_ms"],
            row["container"],
            self._time_cell(row["created_at"]),
            self._json_cell(row["analysis"]),
        )
        renditions = tuple(
            Rendition(e, int(rate), int(size), sha) for e, rate, size, sha in self._json_cell(row["renditions"])
        )
        return Draft(row["id"], row["tenant_id"], upload, renditions, self._time_cell(row["expires_at"]))

    def drop_draft(self, tenant_id: str, draft_id: str) -> bool:
        """Forget the tenant's draft; False if it had no such draft."""
        with self._write(tenant_id) as db:
            return bool(
                self._exec(db, "DELETE FROM drafts WHERE id = ? AND tenant_id = ? RETURNING id", (draft_id, tenant_id))
            )

    def drop_expired_drafts(self, now: datetime) -> int:
        """Delete every expired draft (their blobs are then collected); how many."""
        with self._write() as db:
            return len(
                self._exec(db, "DELETE FROM drafts WHERE expires_at <= ? RETURNING id", (self._time_param(now),))
            )

    def _draft_blobs(self) -> set[str]:
        blobs: set[str] = set()
        for row in self._select("SELECT sha256, renditions FROM drafts"):
            blobs.add(row["sha256"])
            blobs.update(sha for _, _, _, sha in self._json_cell(row["renditions"]))
        return blobs
