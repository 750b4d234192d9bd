"""The tenant admin's page and its sign-in: ``/``, ``/login/{link}``, ``/logout``, ``/static/…``.

Self-contained: HTML, CSS and JS are package data (``static/``), the HTML filled in here with the
language's sentences (:mod:`.texts`), escaped. Pages are never cached and never framed, send a
Referer only to this server (a login link must not leak; ``no-referrer`` would also make Chromium
send ``Origin: null`` on our own forms), and run only our own script (Content-Security-Policy).
"""

from __future__ import annotations

import html
import json
import math
from datetime import timedelta
from importlib import resources
from string import Template
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .. import disclaimer
from .auth import browser_session, check_csrf, now, same_origin
from .context import BACKEND, READER, SETTINGS, SIGN_IN_THREAD, ApiError, in_thread
from .logins import check_login_link, cookie_name, redeem_login_link
from .texts import LANGUAGES, TEXTS, pick_language

LANG_COOKIE = "omh_lang"
STATIC = {"page.css": "text/css", "page.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self';"
    " connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    # the page records a message with the microphone (its own origin only); nothing else is asked for
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), display-capture=()",
}
#: why a link is refused -> (HTTP status, sentence key)
LINK_REFUSALS = {
    "unknown": (404, "link_unknown"),
    "used": (410, "link_used"),
    "expired": (410, "link_expired"),
    "revoked": (410, "link_revoked"),
}


def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def language(request: web.Request) -> str:
    """The language to answer ``request`` in."""
    return pick_language(
        request.query.get("lang"), request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language")
    )


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)


def message_page(lang: str, heading_key: str, text: str, status: int, action: str = "") -> web.Response:
    """A page with one heading, one sentence and an optional form (already escaped HTML)."""
    texts = TEXTS[lang]
    body = Template(_static("message.html")).substitute(
        lang=lang, heading=html.escape(texts[heading_key]), text=html.escape(text), action=action
    )
    return _html(body, status)


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


async def index(request: web.Request) -> web.StreamResponse:
    """``GET /``: the tenant's page for a signed-in admin; otherwise how to sign in."""
    lang = language(request)
    session = await browser_session(request)
    if session is None:
        response = message_page(lang, "title", TEXTS[lang]["signed_out"], 401)
    else:
        texts = TEXTS[lang]
        config = {
            "tenant": session.tenant_id,
            "csrf": session.csrf,
            "lang": lang,  # script-safe JSON
            "max_bytes": request.app[SETTINGS].max_upload_bytes,
            "disclaimer_version": disclaimer.VERSION,
            "texts": texts,
        }
        other = LANGUAGES[1 - LANGUAGES.index(lang)]
        fields = {key: html.escape(value) for key, value in texts.items()}
        body = Template(_static("page.html")).substitute(
            fields,
            lang=lang,
            other_lang=other,
            csrf=html.escape(session.csrf),
            config_json=_script_json(config),
            account=html.escape(texts["account"].format(tenant=session.tenant_id)),
        )
        response = _html(body)
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/", samesite="Lax", secure=_secure(request))
    return response


def _secure(request: web.Request) -> bool:
    return request.app[SETTINGS].public_url.startswith("https://")


async def login_form(request: web.Request) -> web.Response:
    """``GET /login/{link}``: a sign-in button if the link still works (nothing is used up by a
    GET, so a mail scanner following the link does not spend it), else why not."""
    lang = language(request)
    texts = TEXTS[lang]
    credential = request.match_info["link"]
    check = await in_thread(request, check_login_link, request.app[READER], credential, now())
    if check.link is None or check.refusal is not None:
        status, key = LINK_REFUSALS[check.refusal or "unknown"]
        return message_page(lang, "sign_in_title", texts[key], status)
    action = (
        f'<form method="post" action="/login/{html.escape(credential)}">'
        f'<button type="submit" id="sign-in">{html.escape(texts["sign_in"])}</button></form>'
    )
    return message_page(lang, "sign_in_title", texts["sign_in_text"].format(tenant=check.link.tenant_id), 200, action)


def _redeem(request: web.Request, credential: str) -> Any:
    settings = request.app[SETTINGS]
    with request.app[BACKEND].catalog() as catalog:
        return redeem_login_link(catalog, credential, now(), timedelta(seconds=settings.http_session_ttl_s))


async def login(request: web.Request) -> web.Response:
    """``POST /login/{link}``: use the link up, set the session cookie, go to the page."""
    lang = language(request)
    texts = TEXTS[lang]
    if not same_origin(request):
        return message_page(lang, "sign_in_title", texts["link_cross_site"], 403)
    credential = request.match_info["link"]
    check = await in_thread(request, check_login_link, request.app[READER], credential, now())
    if check.link is None or check.refusal is not None:  # junk never reaches a writable catalog
        status, key = LINK_REFUSALS[check.refusal or "unknown"]
        return message_page(lang, "sign_in_title", texts[key], status)
    # a write may wait on the catalog's lock: not in the thread every read goes through
    session, cookie, refusal = await in_thread(request, _redeem, request, credential, pool=SIGN_IN_THREAD)
    if session is None:
        status, key = LINK_REFUSALS[refusal or "unknown"]
        return message_page(lang, "sign_in_title", texts[key], status)
    response = web.HTTPSeeOther("/", headers=SECURITY_HEADERS)
    response.set_cookie(
        cookie_name(request.app[SETTINGS].public_url),
        cookie,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=math.ceil(request.app[SETTINGS].http_session_ttl_s),
    )
    raise response


def _end(request: web.Request, session_id: str) -> None:
    with request.app[BACKEND].catalog() as catalog:
        catalog.end_session(session_id, now())


async def logout(request: web.Request) -> web.Response:
    """``POST /logout`` (form field ``csrf``): end the session on the server and forget the
    cookie. Only a request that carries the session and its CSRF token touches either: a form
    posted from another site (it carries no Strict cookie) cannot sign the admin out."""
    lang = language(request)
    texts = TEXTS[lang]
    session = await browser_session(request)
    if session is None:
        return message_page(lang, "title", texts["signed_out"], 401)
    try:
        form = await request.post()
    except (ValueError, AssertionError, HttpProcessingError, RequestPayloadError):  # not a form: the client's fault
        return message_page(lang, "title", texts["error_csrf_required"], 400)
    supplied = form.get("csrf")
    try:
        check_csrf(request, session, supplied if isinstance(supplied, str) else None)
    except ApiError:
        return message_page(lang, "title", texts["error_csrf_required"], 403)
    await in_thread(request, _end, request, session.id, pool=SIGN_IN_THREAD)
    response = message_page(lang, "title", texts["signed_out_done"], 200)
    response.del_cookie(cookie_name(request.app[SETTINGS].public_url), path="/")
    return response


async def static(request: web.Request) -> web.Response:
    """``GET /static/{name}``: the page's CSS and script."""
    name = request.match_info["name"]
    if name not in STATIC:
        raise ApiError(404, "not_found", "no such file")
    return web.Response(
        text=_static(name),
        content_type=STATIC[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def add_routes(app: web.Application) -> None:
    """The page's routes on ``app``."""
    app.router.add_get("/", index)
    app.router.add_get("/login/{link}", login_form)
    app.router.add_post("/login/{link}", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/static/{name}", static)
