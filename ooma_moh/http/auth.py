"""Who is asking: a bearer token (scripts, the operator) or a browser session (the page).

A session comes from its HttpOnly cookie; any request that changes something must also carry the
session's CSRF token in ``X-CSRF-Token`` (the page has it; another site cannot read it). Bearer
requests need no CSRF token: browsers never add an Authorization header by themselves.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web

from ..credentials import ApiToken, BrowserSession
from ..errors import InvalidTenantId, NoLongerAuthorised
from ..model import validate_tenant_id
from ..storage.base import Credentials
from .context import SETTINGS, ApiError, remembered
from .logins import check_session, cookie_name
from .tokens import check_token

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
#: what a 401 answers with (RFC 9110 11.6.1): the scheme that would have worked
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ooma-moh"'}
Principal = ApiToken | BrowserSession


def now() -> datetime:
    """The time sessions and links are judged at."""
    return datetime.now(UTC)


async def browser_session(request: web.Request) -> BrowserSession | None:
    """The open session of the request's cookie, if any."""
    cookie = request.cookies.get(cookie_name(request.app[SETTINGS].public_url))
    if not cookie:
        return None
    session = await remembered(request, "session", cookie, lambda reader, value: check_session(reader, value, now()))
    return session if session is not None and session.open_at(now()) else None  # kept: its end still holds


def same_origin(request: web.Request) -> bool:
    """False when a browser says the request comes from another site: an ``Origin`` (scheme and
    host) that is neither the public URL's nor the one the request was sent to, or several
    Origin headers; True without an Origin header."""
    origins = request.headers.getall("Origin", [])
    if not origins:
        return True
    if len(origins) > 1:
        return False
    public = urlsplit(request.app[SETTINGS].public_url)
    allowed = {f"{public.scheme}://{public.netloc}", f"{request.scheme}://{request.host}"}
    return origins[0].rstrip("/") in allowed


def check_csrf(request: web.Request, session: BrowserSession, supplied: str | None) -> None:
    """403 unless ``supplied`` is the session's CSRF token and the request is from our origin."""
    if not supplied or not hmac.compare_digest(supplied.encode(), session.csrf.encode()) or not same_origin(request):
        raise ApiError(
            403,
            "csrf_required",
            "this change must come from the Music on hold page (missing or wrong CSRF token): reload the page",
        )


async def principal(request: web.Request) -> Principal:
    """The token or session the request acts with; 401 without one, 403 on a change without
    its CSRF token. An ``Authorization`` of another scheme than Bearer (a basic-auth proxy in
    front) is not ours: the session cookie decides."""
    header = request.headers.get("Authorization", "")
    if header.partition(" ")[0].lower() == "bearer":
        scheme, _, bearer = header.partition(" ")
        token = None
        if scheme.lower() == "bearer" and bearer:
            token = await remembered(request, "token", bearer.strip(), check_token)
        if token is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer …)", CHALLENGE)
        return token
    session = await browser_session(request)
    if session is None:
        raise ApiError(
            401,
            "unauthorized",
            "sign in again (your session has ended) or send a bearer token (Authorization: Bearer …)",
            CHALLENGE,
        )
    if request.method not in SAFE_METHODS:
        check_csrf(request, session, request.headers.get(CSRF_HEADER))
    return session


def still_holds(request: web.Request) -> Callable[[Credentials], None]:
    """A check of the request's credentials to run later in another thread, on that thread's
    catalog: ``NoLongerAuthorised`` if its token was revoked or its session ended meanwhile."""
    header = request.headers.get("Authorization", "")
    scheme, _, bearer = header.partition(" ")
    cookie = request.cookies.get(cookie_name(request.app[SETTINGS].public_url), "")

    def check(catalog: Credentials) -> None:
        if scheme.lower() == "bearer":
            valid = check_token(catalog, bearer.strip()) is not None
        else:
            valid = check_session(catalog, cookie, now()) is not None
        if not valid:
            raise NoLongerAuthorised(
                "your token was revoked or your session ended during the upload: nothing was stored; sign in again"
            )

    return check


async def authorised_tenant(request: web.Request) -> tuple[Principal, str]:
    """The caller and the tenant of the URL it may manage; 401 / 403 / 404 otherwise (404 also
    for a tenant it may not see: the API never tells whether a tenant exists)."""
    who = await principal(request)
    tenant = request.match_info["tenant"]
    try:
        validate_tenant_id(tenant)
    except InvalidTenantId:
        raise ApiError(404, "not_found", "no such tenant") from None
    if not who.may_manage(tenant):
        raise ApiError(404, "not_found", "no such tenant")
    return who, tenant
