"""The storage interfaces the service relies on: the catalog (SQLite, PostgreSQL) and the blobs
(local directory, object storage)."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Protocol

from ..credentials import ApiToken, BrowserSession, LoginLink
from ..holdstats import HoldDay
from ..model import Disclaimer, Draft, Rendition, TenantMoh, UploadedFile


@dataclass(frozen=True)
class AuditEntry:
    """One line of a tenant's history (uploads with their disclaimer, deletions)."""

    at: datetime
    tenant_id: str
    action: str
    detail: dict[str, object]


class TenantCatalog(Protocol):
    """Tenants and their music: what the service, the syncer and the hold paths read and change.
    Every method is one atomic transaction."""

    def close(self) -> None:
        """Release the connection."""

    def get(self, tenant_id: str) -> TenantMoh | None:
        """The tenant's record, or None if the catalog has never seen it."""

    def list(self) -> list[TenantMoh]:
        """Every known tenant, ordered by id."""

    def save_upload(
        self,
        tenant_id: str,
        upload: UploadedFile,
        disclaimer: Disclaimer,
        renditions: tuple[Rendition, ...],
        draft_id: str | None = None,
    ) -> TenantMoh:
        """Make ``upload`` the tenant's file (setting ``file``); the file it replaces becomes the
        tenant's ``previous`` (rules in :mod:`.sql_history`); ``draft_id``: the draft this saves,
        removed in the same transaction."""

    def set_default(self, tenant_id: str, at: datetime) -> TenantMoh | None:
        """Back to default music, the file kept as ``previous``; None if the tenant is unknown."""

    def restore_previous(self, tenant_id: str, disclaimer: Disclaimer, at: datetime) -> TenantMoh | None:
        """Make the previous file current again (``disclaimer`` accepted anew); the current one
        becomes ``previous``. None, nothing changed, when there is no previous file."""

    def add_draft(self, draft: Draft, limit: int, now: datetime) -> bool:
        """Store ``draft``; False (nothing stored) if its tenant already holds ``limit`` live drafts."""

    def draft(self, tenant_id: str, draft_id: str, now: datetime) -> Draft | None:
        """The tenant's draft if it exists and has not expired at ``now`` (another tenant's: None)."""

    def drop_draft(self, tenant_id: str, draft_id: str) -> bool:
        """Forget the tenant's draft; False if there was none."""

    def drop_expired_drafts(self, now: datetime) -> int:
        """Delete drafts expired at ``now`` (their blobs become unreferenced); how many."""

    def referenced_blobs(self) -> set[str]:
        """sha256 of every original and rendition the catalog references (current and previous
        files, drafts)."""

    def audit(self, tenant_id: str) -> builtins.list[AuditEntry]:
        """The tenant's history, oldest first."""


class EndpointMap(Protocol):
    """Which tenant an endpoint belongs to (the hold handler's last resort, ``ooma-moh endpoints``)."""

    def endpoint_tenant(self, endpoint: str) -> str | None:
        """The tenant an endpoint (e.g. ``PJSIP/acme-100``) is mapped to, if any."""

    def map_endpoint(self, endpoint: str, tenant_id: str | None) -> None:
        """Map an endpoint to a tenant (None removes the mapping)."""

    def endpoints(self) -> dict[str, str]:
        """Every endpoint mapping: endpoint -> tenant."""


class Credentials(Protocol):
    """API tokens, login links and browser sessions (only each secret's sha256 is stored)."""

    def add_token(self, token: ApiToken, secret_sha256: str) -> None:
        """Store a new API token (only the sha256 of its secret)."""

    def token(self, token_id: str) -> tuple[ApiToken, str] | None:
        """A token and the sha256 of its secret, or None."""

    def tokens(self) -> builtins.list[ApiToken]:
        """Every token, revoked ones included, oldest first."""

    def revoke_token(self, token_id: str, at: datetime) -> bool:
        """Revoke a token; False if it is unknown or already revoked."""

    def add_login_link(self, link: LoginLink, secret_sha256: str) -> None:
        """Store a new one-time login link (only the sha256 of its secret)."""

    def login_link(self, link_id: str) -> tuple[LoginLink, str] | None:
        """A login link and the sha256 of its secret, or None."""

    def redeem_login_link(self, link_id: str, session: BrowserSession, secret_sha256: str) -> bool:
        """Mark the link used and open ``session`` in one step; False (nothing changed) if the
        link is unknown, already used or expired at ``session.created_at``."""

    def browser_session(self, session_id: str) -> tuple[BrowserSession, str] | None:
        """A browser session and the sha256 of its secret, or None."""

    def end_session(self, session_id: str, at: datetime) -> bool:
        """Log a session out; False if it is unknown or already ended."""

    def open_sign_ins(self, now: datetime) -> tuple[builtins.list[LoginLink], builtins.list[BrowserSession]]:
        """Login links that can still be used and sessions still open at ``now``."""

    def sign_out_tenant(self, tenant_id: str, at: datetime) -> tuple[int, int]:
        """Void the tenant's unused links and end its sessions; (links, sessions) affected."""


class HoldStatistics(Protocol):
    """Per tenant and day hold figures (rules in :mod:`ooma_moh.holdstats`): only ever added to."""

    def close(self) -> None:
        """Close the connection."""

    def add_hold_days(self, rows: Sequence[tuple[str, HoldDay]]) -> None:
        """Add each (tenant, day's figures) to what is stored for that tenant and day, in one
        transaction; two writers adding at once both count."""

    def hold_days(self, tenant_id: str, first: date, last: date) -> builtins.list[HoldDay]:
        """The tenant's stored days from ``first`` to ``last`` (both included), oldest first;
        days without holds are absent."""

    def hold_totals(self, first: date, last: date) -> dict[str, HoldDay]:
        """Every tenant's figures from ``first`` to ``last`` added up (``day`` is ``first``),
        for tenants with at least one hold."""

    def drop_hold_days_before(self, day: date) -> int:
        """Forget every tenant's days before ``day``; how many (tenant, day) were dropped."""


class Catalog(TenantCatalog, EndpointMap, Credentials, HoldStatistics, Protocol):
    """The four roles on one database: what the back ends (SQLite, PostgreSQL, in memory)
    implement and the wiring opens. Code that needs one role asks for that role."""


class Fetcher(Protocol):
    """Blobs fetched for many version directories at once (a catch-up): :meth:`fetch` from any
    thread, then :meth:`settle` before using them."""

    def fetch(self, sha256: str) -> None:
        """Bring the blob here, checked against its sha256; not durable until :meth:`settle`."""

    def settle(self) -> None:
        """Make every blob fetched so far durable (one commit of the file system) and stored."""


class Blobs(Protocol):
    """Content-addressed files: the local directory (:class:`~ooma_moh.storage.blobs.BlobStore`)
    or object storage with a local cache (:class:`~ooma_moh.storage.s3.S3BlobStore`)."""

    writable: bool

    @property
    def scratch_root(self) -> Path:
        """The local directory holding scratch directories."""

    def path(self, sha256: str) -> Path:
        """Where the blob is (or would be) on local disk."""

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""

    def holds_files(self) -> bool:
        """Whether any blob is stored or trashed."""

    def stored(self) -> set[str]:
        """The sha256 of every stored blob (trashed ones not included)."""

    def put(self, source: Path) -> tuple[str, int]:
        """Store ``source`` (in the scratch area); (sha256, size)."""

    def locate(self, sha256: str) -> Path:
        """A local path of the blob, complete and checked."""

    def read(self, sha256: str) -> bytes:
        """The blob's bytes, checked against its sha256."""

    def fetching(self) -> contextlib.AbstractContextManager[Fetcher]:
        """A :class:`Fetcher` for many blobs at once (a catch-up); what
        it fetched and did not settle is gone when the context ends."""

    def scratch(self) -> contextlib.AbstractContextManager[Path]:
        """A private local scratch directory; blobs put meanwhile are safe from the clean-up."""

    def reclaim_scratch(self) -> None:
        """Remove scratch directories of dead writers."""

    def collect(self, referenced: Callable[[], set[str]], now: float | None = None) -> int:
        """Move unreferenced blobs to the trash; delete old trash; how many were moved."""
