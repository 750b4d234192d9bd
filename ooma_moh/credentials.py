"""Who may act on a tenant's music, as plain immutable data: API tokens, one-time login links
and browser sessions. No secret is kept in them — the catalog stores only each secret's sha256
(:mod:`ooma_moh.http.tokens`, :mod:`ooma_moh.http.logins` make and check them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ApiToken:
    """A bearer token of the HTTP API: for one tenant's admin (``scope`` ``tenant``) or for the
    operator (``operator``, every tenant). Its secret is never stored, only its sha256."""

    id: str
    scope: str
    tenant_id: str | None
    created_at: datetime
    revoked_at: datetime | None = None

    def may_manage(self, tenant_id: str) -> bool:
        """Whether this token may read and change ``tenant_id``'s music."""
        return self.revoked_at is None and (self.scope == "operator" or self.tenant_id == tenant_id)

    @property
    def actor(self) -> str:
        """Who acts with this token, as the audit trail records it."""
        return f"api token {self.id}"


@dataclass(frozen=True)
class LoginLink:
    """A one-time link that opens a browser session for one tenant's admin. Its secret is never
    stored, only its sha256; it works once, before ``expires_at``."""

    id: str
    tenant_id: str
    label: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why the link cannot open a session now (``used``, ``revoked``, ``expired``), or None."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        return None


@dataclass(frozen=True)
class BrowserSession:
    """A tenant admin signed in through a login link: an HttpOnly cookie carries its secret
    (stored only as a sha256); ``csrf`` must accompany every change made from the page."""

    id: str
    tenant_id: str
    label: str
    link_id: str
    csrf: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None

    def open_at(self, now: datetime) -> bool:
        """Whether the session still works at ``now`` (not logged out, not expired)."""
        return self.ended_at is None and now < self.expires_at

    def may_manage(self, tenant_id: str) -> bool:
        """Whether this session may read and change ``tenant_id``'s music."""
        return self.ended_at is None and self.tenant_id == tenant_id

    @property
    def actor(self) -> str:
        """Who acts in this session, as the audit trail records it."""
        return f"{self.label} (login link {self.link_id})"
