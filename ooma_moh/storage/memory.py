"""The catalog in memory: the fake beside the real back ends (SQLite, PostgreSQL), for unit tests
of everything above the catalog (the HTTP API, the agent, the hold handler's resolver).

It keeps the :class:`~ooma_moh.storage.base.Catalog` contract the real ones keep — every method
atomic (one lock), records immutable, the audit trail and the blob references as they have them —
and the shared contract tests run it beside SQLite (tests/unit/test_catalog_contract.py).
"""

from __future__ import annotations

import builtins
import dataclasses
import threading
from collections.abc import Sequence
from datetime import date, datetime

from ..credentials import ApiToken, BrowserSession, LoginLink
from ..holdstats import HoldDay
from ..model import Disclaimer, Draft, MohSetting, Rendition, TenantMoh, UploadedFile
from .base import AuditEntry


class MemoryCatalog:
    """Tenants, endpoint map, tokens, login links and sessions in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[str, TenantMoh] = {}
        self._endpoints: dict[str, str] = {}
        self._tokens: dict[str, tuple[ApiToken, str]] = {}
        self._links: dict[str, tuple[LoginLink, str]] = {}
        self._sessions: dict[str, tuple[BrowserSession, str]] = {}
        self._audit: list[AuditEntry] = []
        #: tenant -> its previous file, whole (rule 1 of :mod:`.sql_history`)
        self._previous: dict[str, TenantMoh] = {}
        self._drafts: dict[str, Draft] = {}
        self._hold_days: dict[tuple[str, date], HoldDay] = {}
        self.closed = False

    def close(self) -> None:
        self.closed = True

    # -- tenants and their music ------------------------------------------------------------
    def get(self, tenant_id: str) -> TenantMoh | None:
        with self._lock:
            return self._tenants.get(tenant_id)

    def list(self) -> builtins.list[TenantMoh]:
        with self._lock:
            return [self._tenants[t] for t in sorted(self._tenants)]

    def _point(self, tenant_id: str, tenant: TenantMoh) -> TenantMoh:
        """Make ``tenant`` the record; the file it replaces becomes ``previous`` (rule 1)."""
        before = self._tenants.get(tenant_id)
        keep = self._previous.get(tenant_id)
        if before is not None and before.upload is not None and before.upload != tenant.upload:
            keep = dataclasses.replace(before, previous=None)
        if keep is None or keep.upload == tenant.upload:
            self._previous.pop(tenant_id, None)
            keep = None
        else:
            self._previous[tenant_id] = keep
        tenant = dataclasses.replace(tenant, previous=keep.upload if keep else None)
        self._tenants[tenant_id] = tenant
        return tenant

    def save_upload(
        self,
        tenant_id: str,
        upload: UploadedFile,
        disclaimer: Disclaimer,
        renditions: tuple[Rendition, ...],
        draft_id: str | None = None,
    ) -> TenantMoh:
        with self._lock:
            previous = self._tenants.get(tenant_id)
            tenant = self._point(
                tenant_id, TenantMoh(tenant_id, MohSetting.FILE, upload, disclaimer, renditions, upload.uploaded_at)
            )
            if draft_id is not None and draft_id in self._drafts and self._drafts[draft_id].tenant_id == tenant_id:
                del self._drafts[draft_id]
            detail: dict[str, object] = {
                "original_name": upload.original_name,
                "size": upload.size,
                "sha256": upload.sha256,
                "duration_ms": upload.duration_ms,
                "accepted_by": disclaimer.accepted_by,
                "disclaimer_version": disclaimer.text_version,
                "accepted_at": disclaimer.accepted_at.isoformat(),
                "replaced_upload": previous.upload.sha256 if previous and previous.upload else None,
            }
            self._audit.append(AuditEntry(upload.uploaded_at, tenant_id, "upload", detail))
            return tenant

    def set_default(self, tenant_id: str, at: datetime) -> TenantMoh | None:
        with self._lock:
            previous = self._tenants.get(tenant_id)
            if previous is None:
                return None
            tenant = self._point(tenant_id, TenantMoh(tenant_id, MohSetting.DEFAULT, updated_at=at))
            removed = previous.upload.sha256 if previous.upload else None
            self._audit.append(AuditEntry(at, tenant_id, "delete", {"removed_upload": removed}))
            return tenant

    def restore_previous(self, tenant_id: str, disclaimer: Disclaimer, at: datetime) -> TenantMoh | None:
        with self._lock:
            kept = self._previous.get(tenant_id)
            if kept is None or kept.upload is None:
                return None
            before = self._tenants[tenant_id]
            restored = TenantMoh(tenant_id, MohSetting.FILE, kept.upload, disclaimer, kept.renditions, at)
            tenant = self._point(tenant_id, restored)
            detail: dict[str, object] = {
                "sha256": kept.upload.sha256,
                "original_name": kept.upload.original_name,
                "accepted_by": disclaimer.accepted_by,
                "disclaimer_version": disclaimer.text_version,
                "replaced_upload": before.upload.sha256 if before.upload else None,
            }
            self._audit.append(AuditEntry(at, tenant_id, "restore", detail))
            return tenant

    # -- drafts (rules 3-5 of :mod:`.sql_history`) ------------------------------------------------
    def add_draft(self, draft: Draft, limit: int, now: datetime) -> bool:
        with self._lock:
            self._expire(now)
            if sum(d.tenant_id == draft.tenant_id for d in self._drafts.values()) >= limit:
                return False
            self._drafts[draft.draft_id] = draft
            return True

    def draft(self, tenant_id: str, draft_id: str, now: datetime) -> Draft | None:
        with self._lock:
            found = self._drafts.get(draft_id)
            return found if found and found.tenant_id == tenant_id and found.expires_at > now else None

    def drop_draft(self, tenant_id: str, draft_id: str) -> bool:
        with self._lock:
            found = self._drafts.get(draft_id)
            if found is None or found.tenant_id != tenant_id:
                return False
            del self._drafts[draft_id]
            return True

    def drop_expired_drafts(self, now: datetime) -> int:
        with self._lock:
            return self._expire(now)

    def _expire(self, now: datetime) -> int:
        gone = [k for k, d in self._drafts.items() if d.expires_at <= now]
        for key in gone:
            del self._drafts[key]
        return len(gone)

    def referenced_blobs(self) -> set[str]:
        with self._lock:
            held = [*self._tenants.values(), *self._previous.values()]
            files = [(t.upload, t.renditions) for t in held if t.upload is not None]
            files += [(d.upload, d.renditions) for d in self._drafts.values()]
            return {sha for upload, renditions in files for sha in (upload.sha256, *(r.sha256 for r in renditions))}

    def audit(self, tenant_id: str) -> builtins.list[AuditEntry]:
        with self._lock:
            return [e for e in self._audit if e.tenant_id == tenant_id]

    # -- endpoint map ---------------------------------------------------------------------------
    def endpoint_tenant(self, endpoint: str) -> str | None:
        with self._lock:
            return self._endpoints.get(endpoint)

    def map_endpoint(self, endpoint: str, tenant_id: str | None) -> None:
        with self._lock:
            if tenant_id is None:
                self._endpoints.pop(endpoint, None)
            else:
                self._endpoints[endpoint] = tenant_id

    def endpoints(self) -> dict[str, str]:
        with self._lock:
            return dict(sorted(self._endpoints.items()))

    # -- credentials: tokens, login links, browser sessions ------------------------------------
    def add_token(self, token: ApiToken, secret_sha256: str) -> None:
        with self._lock:
            self._tokens[token.id] = (token, secret_sha256)

    def token(self, token_id: str) -> tuple[ApiToken, str] | None:
        with self._lock:
            return self._tokens.get(token_id)

    def tokens(self) -> builtins.list[ApiToken]:
        with self._lock:
            return sorted((t for t, _ in self._tokens.values()), key=lambda t: (t.created_at, t.id))

    def revoke_token(self, token_id: str, at: datetime) -> bool:
        with self._lock:
            found = self._tokens.get(token_id)
            if found is None or found[0].revoked_at is not None:
                return False
            self._tokens[token_id] = (dataclasses.replace(found[0], revoked_at=at), found[1])
            return True

    def add_login_link(self, link: LoginLink, secret_sha256: str) -> None:
        with self._lock:
            self._links[link.id] = (link, secret_sha256)

    def login_link(self, link_id: str) -> tuple[LoginLink, str] | None:
        with self._lock:
            return self._links.get(link_id)

    def redeem_login_link(self, link_id: str, session: BrowserSession, secret_sha256: str) -> bool:
        with self._lock:
            found = self._links.get(link_id)
            if found is None or found[0].used_at is not None or found[0].revoked_at is not None:
                return False
            if found[0].expires_at <= session.created_at:
                return False
            self._links[link_id] = (dataclasses.replace(found[0], used_at=session.created_at), found[1])
            self._sessions[session.id] = (session, secret_sha256)
            return True

    def browser_session(self, session_id: str) -> tuple[BrowserSession, str] | None:
        with self._lock:
            return self._sessions.get(session_id)

    def end_session(self, session_id: str, at: datetime) -> bool:
        with self._lock:
            found = self._sessions.get(session_id)
            if found is None or found[0].ended_at is not None:
                return False
            self._sessions[session_id] = (dataclasses.replace(found[0], ended_at=at), found[1])
            return True

    def open_sign_ins(self, now: datetime) -> tuple[builtins.list[LoginLink], builtins.list[BrowserSession]]:
        with self._lock:
            links = sorted((x for x, _ in self._links.values()), key=lambda x: (x.created_at, x.id))
            sessions = sorted((x for x, _ in self._sessions.values()), key=lambda x: (x.created_at, x.id))
        return [x for x in links if x.refusal(now) is None], [x for x in sessions if x.open_at(now)]

    def sign_out_tenant(self, tenant_id: str, at: datetime) -> tuple[int, int]:
        with self._lock:
            links = [
                k
                for k, (x, _) in self._links.items()
                if x.tenant_id == tenant_id and x.used_at is None and x.revoked_at is None
            ]
            for k in links:
                link, sha = self._links[k]
                self._links[k] = (dataclasses.replace(link, revoked_at=at), sha)
            sessions = [k for k, (x, _) in self._sessions.items() if x.tenant_id == tenant_id and x.ended_at is None]
            for k in sessions:
                session, sha = self._sessions[k]
                self._sessions[k] = (dataclasses.replace(session, ended_at=at), sha)
            return len(links), len(sessions)

    # -- hold statistics ---------------------------------------------------------------------
    def add_hold_days(self, rows: Sequence[tuple[str, HoldDay]]) -> None:
        with self._lock:
            for tenant_id, figures in rows:
                self._hold_days.setdefault((tenant_id, figures.day), HoldDay(figures.day)).add(figures)

    def hold_days(self, tenant_id: str, first: date, last: date) -> builtins.list[HoldDay]:
        with self._lock:
            stored = [d for (t, day), d in self._hold_days.items() if t == tenant_id and first <= day <= last]
            return [dataclasses.replace(d, buckets=dict(d.buckets)) for d in sorted(stored, key=lambda d: d.day)]

    def hold_totals(self, first: date, last: date) -> dict[str, HoldDay]:
        with self._lock:
            totals: dict[str, HoldDay] = {}
            for (tenant_id, day), figures in self._hold_days.items():
                if first <= day <= last:
                    totals.setdefault(tenant_id, HoldDay(first)).add(figures)
            return totals

    def drop_hold_days_before(self, day: date) -> int:
        with self._lock:
            gone = [key for key in self._hold_days if key[1] < day]
            for key in gone:
                del self._hold_days[key]
            return len(gone)
