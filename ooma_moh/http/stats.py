"""Hold statistics in the API (docs/http.md, "Hold statistics"): ``GET …/moh/stats?days=30``.

The tenant's figures for each of the last ``days`` UTC days, today included — days without holds
with zeros — and their total (:func:`ooma_moh.holdstats.summary`). ``days`` is a whole number from
1 to :data:`~ooma_moh.holdstats.MAX_DAYS` (default :data:`DEFAULT_DAYS`); anything else, or
``days`` given twice, is 400 ``invalid_days``. Who may read them: as every route of the tenant
(:func:`~.auth.authorised_tenant`).
"""

from __future__ import annotations

from aiohttp import web

from ..holdstats import MAX_DAYS, day_range, summary
from .auth import authorised_tenant
from .context import READER, ApiError, in_thread

#: the days a request without ``days`` gets: the page's chart
DEFAULT_DAYS = 30


def days_asked(values: list[str]) -> int:
    """The number of days the query's ``days`` values ask for; ``ApiError`` 400 ``invalid_days``
    unless there is at most one, made of ASCII digits only, from 1 to ``MAX_DAYS``."""
    if not values:
        return DEFAULT_DAYS
    value = values[0]
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_DAYS))  # int() bounded
    if len(values) == 1 and digits and 1 <= int(value) <= MAX_DAYS:
        return int(value)
    raise ApiError(400, "invalid_days", f"days must be one whole number from 1 to {MAX_DAYS}")


async def get_stats(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/moh/stats``: the tenant's hold figures per day over the last
    ``days`` days, and their total."""
    _, tenant = await authorised_tenant(request)
    days = days_asked(request.query.getall("days", []))
    first, last = day_range(days)
    stored = await in_thread(request, request.app[READER].hold_days, tenant, first, last)
    return web.json_response(summary(stored, first, last))
