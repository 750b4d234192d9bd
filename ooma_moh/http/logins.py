"""Browser sign-in without a token in the page: one-time login links and session cookies.

The operator runs ``ooma-moh tokens link --tenant T``; the admin opens the link and presses the
sign-in button (a POST: a link scanner that only GETs cannot use the link up). That opens a
session whose secret travels only in an HttpOnly, SameSite=Strict cookie. The page carries the
session's CSRF token, which every change must send back. Links read ``<id>_<secret>`` and cookies
``<id>_<secret>``: the id finds the row, the secret is stored only as its sha256.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..credentials import BrowserSession, LoginLink
from ..errors import InvalidActor
from ..model import validate_actor, validate_tenant_id
from ..storage import Credentials
from .tokens import digest

CREDENTIAL_RE = re.compile(r"([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
COOKIE = "omh_session"


def cookie_name(public_url: str) -> str:
    """The session cookie's name: with an https public URL ``__Host-omh_session``, which a
    browser accepts only from this exact host, Secure, on ``/`` — so a sibling subdomain cannot
    plant or shadow it; on plain http (a loopback test) ``omh_session``."""
    return f"__Host-{COOKIE}" if public_url.startswith("https://") else COOKIE


MAX_LABEL_CHARS = 96


def _split(credential: str) -> tuple[str, str] | None:
    match = CREDENTIAL_RE.fullmatch(credential)
    return (match.group(1), match.group(2)) if match else None


def create_login_link(
    catalog: Credentials, *, tenant_id: str, label: str, now: datetime, ttl: timedelta
) -> tuple[LoginLink, str]:
    """A new link for ``tenant_id``'s admin (``label``: who it is for); returns it and the
    credential to put in the URL (shown once)."""
    validate_tenant_id(tenant_id)
    label = validate_actor(label)
    if len(label) > MAX_LABEL_CHARS:  # room for " (login link <id>)" in the audit trail
        raise InvalidActor(
            f"who the link is for (--by) is {len(label)} characters long; at most {MAX_LABEL_CHARS} are allowed"
        )
    link = LoginLink(secrets.token_hex(8), tenant_id, label, now, now + ttl)
    secret = secrets.token_urlsafe(32)
    catalog.add_login_link(link, digest(secret))
    return link, f"{link.id}_{secret}"


@dataclass(frozen=True)
class LinkCheck:
    """What a login link is worth now: its record, or why it is refused
    (``unknown``, ``used``, ``expired``)."""

    link: LoginLink | None
    refusal: str | None


def check_login_link(catalog: Credentials, credential: str, now: datetime) -> LinkCheck:
    """Whether ``credential`` is a link that can still open a session (nothing is changed)."""
    parts = _split(credential)
    found = catalog.login_link(parts[0]) if parts else None
    if parts is None or found is None or not hmac.compare_digest(found[1], digest(parts[1])):
        return LinkCheck(None, "unknown")
    return LinkCheck(found[0], found[0].refusal(now))


def redeem_login_link(
    catalog: Credentials, credential: str, now: datetime, ttl: timedelta
) -> tuple[BrowserSession | None, str, str | None]:
    """Use the link up and open a session: (session, cookie value, None) or
    (None, "", refusal). A link opens at most one session, even when redeemed twice at once."""
    check = check_login_link(catalog, credential, now)
    if check.link is None or check.refusal is not None:
        return None, "", check.refusal
    link = check.link
    session = BrowserSession(
        secrets.token_hex(8), link.tenant_id, link.label, link.id, secrets.token_urlsafe(32), now, now + ttl
    )
    secret = secrets.token_urlsafe(32)
    if not catalog.redeem_login_link(link.id, session, digest(secret)):
        return None, "", "used"
    return session, f"{session.id}_{secret}", None


def check_session(catalog: Credentials, cookie: str, now: datetime) -> BrowserSession | None:
    """The open session a cookie value stands for, or None (malformed, unknown, wrong, ended,
    expired)."""
    parts = _split(cookie)
    found = catalog.browser_session(parts[0]) if parts else None
    if parts is None or found is None or not hmac.compare_digest(found[1], digest(parts[1])):
        return None
    return found[0] if found[0].open_at(now) else None
