"""What clients get wrong is counted, not logged one by one: one INFO line per interval.

aiohttp answers a request it cannot parse (a bad header, a line too long, broken chunked encoding,
an encoding it does not know) with 400 and logs it at ERROR with a traceback — ~600 bytes each, so
anyone could fill the log (1,000 requests: 633 KB in 0.7 s). While a server runs,
:class:`MalformedRequests` on aiohttp's server logger drops those records and counts them by kind;
the connection guard (:mod:`.guard`) counts the connections it refuses or closes the same way.
Each :class:`Tally` says once per interval (and once at the end) how many there were. Errors of the
server itself still log in full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiohttp.http_exceptions import HttpProcessingError

from ..logsafe import printable

log = logging.getLogger(__name__)
AIOHTTP_SERVER = logging.getLogger("aiohttp.server")
#: how often a tally is said (seconds)
REPORT_EVERY_S = 60.0


class Tally:
    """Events counted by kind, said in one INFO line: ``<what>: <total> (<kind> <n>, …)``."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.counts: Counter[str] = Counter()

    def add(self, kind: str) -> None:
        self.counts[kind] += 1

    def flush(self) -> None:
        """One INFO line for what was counted since the last one (nothing if nothing was)."""
        if self.counts:
            total = sum(self.counts.values())
            kinds = ", ".join(f"{printable(kind, 40)} {n}" for kind, n in self.counts.most_common(5))
            log.info("%s: %d (%s)", self.what, total, kinds)
            self.counts.clear()

    async def report_every(self, interval_s: float = REPORT_EVERY_S) -> None:
        """:meth:`flush` every ``interval_s`` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                self.flush()
        finally:
            self.flush()


class MalformedRequests(logging.Filter):
    """Drops aiohttp's records of requests it could not parse, counting them by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.tally = Tally("malformed requests answered 400")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            self.tally.add(type(exc).__name__)
            return False
        return True
