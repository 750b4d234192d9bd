"""Hold statistics in the API (docs/http.md, "Hold statistics"): ``GET …/moh/stats?days=30``."""

from __future__ import annotations

from aiohttp import web


async def get_stats(request: web.Request) -> web.Response:
    """The tenant's hold figures per day over the last ``days`` days (to be built)."""
    raise web.HTTPNotImplemented()
