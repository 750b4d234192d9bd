""""Call my phone" in the API (docs/http.md, "Test call"): the tenant's endpoints, placing a test
call and following it."""

from __future__ import annotations

from aiohttp import web


async def get_endpoints(request: web.Request) -> web.Response:
    """The tenant's endpoints in the endpoint map (to be built)."""
    raise web.HTTPNotImplemented()


async def post_test_call(request: web.Request) -> web.Response:
    """Place a test call (to be built)."""
    raise web.HTTPNotImplemented()


async def get_test_call(request: web.Request) -> web.Response:
    """A test call's state (to be built)."""
    raise web.HTTPNotImplemented()
