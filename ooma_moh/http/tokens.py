"""API tokens: how they look, how they are made and checked. The catalog stores them.

A token reads ``omh_<id>_<secret>``: ``id`` (8 hex digits) names it in ``tokens list`` and
``tokens revoke``; ``secret`` (32 random bytes, URL-safe base64) is shown once and stored only as
its sha256, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from ..credentials import ApiToken
from ..model import validate_tenant_id
from ..storage import Credentials

TOKEN_RE = re.compile(r"omh_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")


def digest(secret: str) -> str:
    """How a secret is stored: its sha256, in hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(catalog: Credentials, *, tenant_id: str | None, now: datetime) -> tuple[ApiToken, str]:
    """A new token for ``tenant_id`` (None: operator); returns it and the bearer string."""
    if tenant_id is not None:
        validate_tenant_id(tenant_id)
    token = ApiToken(secrets.token_hex(4), "tenant" if tenant_id else "operator", tenant_id, now)
    secret = secrets.token_urlsafe(32)
    catalog.add_token(token, digest(secret))
    return token, f"omh_{token.id}_{secret}"


def check_token(catalog: Credentials, bearer: str) -> ApiToken | None:
    """The live token a bearer string stands for, or None (malformed, unknown, wrong, revoked)."""
    match = TOKEN_RE.fullmatch(bearer)
    if match is None:
        return None
    found = catalog.token(match.group(1))
    if found is None:
        return None
    token, stored = found
    if not hmac.compare_digest(stored, digest(match.group(2))) or token.revoked_at is not None:
        return None
    return token
