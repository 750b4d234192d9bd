"""Test calls ("call my phone") in the API (docs/http.md, "Test call"): the tenant's endpoints, placing a test
call and following it. The rules are :mod:`ooma_moh.testcall`'s, the ARI side
:mod:`ooma_moh.ari.testcall`'s; these handlers only check who asks, read the request and answer.

Order of the checks of ``POST …/moh/test-call``: credentials and tenant (401 / 403 / 404, as
every route), the body (400 ``invalid_test_call``), the endpoint — one of the tenant's in the
endpoint map, else 404 ``no_endpoint``, the same answer for an unknown endpoint, a malformed one
and another tenant's —, the rules (429 with ``Retry-After``), ARI (503 ``ari_unavailable``:
nothing placed, nothing counted). Then 202 ``{"call": id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..ari.testcall import AriUnavailable, Dialler, ari_line
from ..errors import InvalidTenantId
from ..logsafe import logfmt
from ..model import validate_endpoint
from ..resolve import ClassResolver
from ..storage import Catalog
from ..testcall import CallRefused
from .auth import authorised_tenant
from .context import BACKEND, CATALOG_THREAD, READER, TEST_CALLS, ApiError, in_thread

log = logging.getLogger(__name__)
#: a test call's request body is one small JSON object
MAX_BODY = 4096
#: what a 503 for ARI out of reach asks the client to wait (seconds)
ARI_RETRY_AFTER_S = 30


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The server's dialler (after the catalog thread exists; its calls hung up at the end)."""
    backend = app[BACKEND]
    settings = backend.settings
    ari, listen = backend.test_call_line() if backend.test_call_line is not None else ari_line(settings)
    classes = backend.classes or ClassResolver(backend.reader, settings.class_prefix)
    pool = app[CATALOG_THREAD]

    async def run(func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    app[TEST_CALLS] = Dialler(settings, ari, listen, classes, run)
    yield
    await app[TEST_CALLS].close()


def tenant_endpoints(reader: Catalog, tenant: str) -> list[str]:
    """(blocking) The tenant's endpoints in the endpoint map, sorted."""
    return sorted(endpoint for endpoint, owner in reader.endpoints().items() if owner == tenant)


def owns(reader: Catalog, tenant: str, endpoint: str) -> bool:
    """(blocking) Whether ``endpoint`` is mapped to ``tenant``."""
    return reader.endpoint_tenant(endpoint) == tenant


async def endpoint_asked(request: web.Request) -> str:
    """The ``endpoint`` of the JSON body; 400 ``invalid_test_call`` unless it is a JSON object of
    at most MAX_BODY bytes with a string ``endpoint``."""
    body = b""
    while len(body) <= MAX_BODY:  # read() answers what has arrived: a body in two packets is read whole
        chunk = await request.content.read(MAX_BODY + 1 - len(body))
        if not chunk:
            break
        body += chunk
    asked: Any = None
    if len(body) <= MAX_BODY:
        with contextlib.suppress(ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            asked = json.loads(body)
    if not isinstance(asked, dict) or not isinstance(asked.get("endpoint"), str):
        raise ApiError(400, "invalid_test_call", 'the body must be JSON {"endpoint": "<one of your endpoints>"}')
    endpoint: str = asked["endpoint"]
    return endpoint


async def get_endpoints(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/endpoints``: the tenant's endpoints, as ``ooma-moh endpoints`` lists them."""
    _, tenant = await authorised_tenant(request)
    endpoints = await in_thread(request, tenant_endpoints, request.app[READER], tenant)
    return web.json_response({"endpoints": endpoints})


async def post_test_call(request: web.Request) -> web.Response:
    """``POST /tenants/{tenant}/moh/test-call``: ring one of the tenant's endpoints; 202 ``{"call": id}``."""
    who, tenant = await authorised_tenant(request)
    endpoint = await endpoint_asked(request)
    try:
        mine = await in_thread(request, owns, request.app[READER], tenant, validate_endpoint(endpoint))
    except InvalidTenantId:
        mine = False
    if not mine:
        raise ApiError(404, "no_endpoint", "no such endpoint in this account")
    try:
        call = await request.app[TEST_CALLS].place(tenant, endpoint, who.actor)
    except CallRefused as exc:
        log.info(
            "test-call refused tenant=%s endpoint=%s by=%s code=%s retry_after=%d",
            logfmt(tenant),
            logfmt(endpoint),
            logfmt(who.actor),
            exc.code,
            exc.retry_after,
        )
        raise ApiError(429, exc.code, str(exc), {"Retry-After": str(exc.retry_after)}) from None
    except AriUnavailable:
        raise ApiError(
            503,
            "ari_unavailable",
            "the phone system cannot be reached to place the call: nothing was dialled, try again later",
            {"Retry-After": str(ARI_RETRY_AFTER_S)},
        ) from None
    return web.json_response({"call": call.id}, status=202)


async def get_test_call(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/moh/test-call/{call}``: the call's state; 404 ``no_test_call`` for
    another tenant's, an unknown or a forgotten one."""
    _, tenant = await authorised_tenant(request)
    book = request.app[TEST_CALLS].book
    call = book.find(tenant, request.match_info["call"])
    if call is None:
        raise ApiError(404, "no_test_call", "no such test call")
    return web.json_response(call.body(book.seconds))
