"""Malformed requests are the client's fault, not the server's: counted and logged in aggregate.

aiohttp answers a request it cannot parse (a bad header, a line too long, broken chunked encoding,
an encoding it does not know) with 400 and logs it at ERROR with a traceback — ~600 bytes each, so
anyone could fill the log (1,000 requests: 633 KB in 0.7 s). While a server runs, this filter on
aiohttp's server logger drops those records and counts them by kind; one INFO line per interval
(and one at the end) says how many there were. Errors of the server itself still log in full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiohttp.http_exceptions import HttpProcessingError

from ..logsafe import printable

log = logging.getLogger(__name__)
AIOHTTP_SERVER = logging.getLogger("aiohttp.server")


class MalformedRequests(logging.Filter):
    """Drops aiohttp's records of requests it could not parse, counting them by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            self.counts[type(exc).__name__] += 1
            return False
        return True

    def flush(self) -> None:
        """One INFO line for what was dropped since the last one (nothing if nothing was)."""
        if self.counts:
            total = sum(self.counts.values())
            kinds = ", ".join(f"{printable(kind, 40)} {n}" for kind, n in self.counts.most_common(5))
            log.info("malformed requests answered 400: %d (%s)", total, kinds)
            self.counts.clear()

    async def report_every(self, interval_s: float) -> None:
        """:meth:`flush` every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.flush()
