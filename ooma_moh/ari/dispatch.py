"""Work for one key runs in order; work for different keys runs concurrently.

The hold handler keys each event by its bridge: a hold and its unhold are never reordered, while
a hold in one bridge does not wait behind the REST round trips of every other call
(docs/benchmarks.md has what the queueing cost before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..logsafe import printable

log = logging.getLogger(__name__)


class KeyedDispatcher:
    """Runs submitted coroutine factories: in submission order per key, concurrently across keys.
    A failure is logged and does not stop later work for the same key."""

    def __init__(self, parallel: int | None = None) -> None:
        """``parallel`` caps how many keys' work runs at once (None: no cap)."""
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(parallel) if parallel else None

    def submit(self, key: str, work: Callable[[], Awaitable[None]], what: str = "") -> asyncio.Task[None]:
        """Queue ``work()`` after everything already submitted for ``key``."""
        previous = self._tails.get(key)
        task = asyncio.get_running_loop().create_task(self._run(previous, work, what, self._slots))
        self._tails[key] = task
        task.add_done_callback(lambda t: self._tails.pop(key) if self._tails.get(key) is t else None)
        return task

    @staticmethod
    async def _run(
        previous: asyncio.Task[None] | None,
        work: Callable[[], Awaitable[None]],
        what: str,
        slots: asyncio.Semaphore | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # its outcome is its own business
        try:
            if slots is None:
                await work()
            else:
                async with slots:
                    await work()
        except Exception:  # one bad event must not stop the key's queue
            log.exception("hold handler failed on %s", printable(what))

    @property
    def pending(self) -> int:
        """Keys with work queued or running."""
        return len(self._tails)

    async def drain(self) -> None:
        """Wait until everything submitted so far has finished."""
        while self._tails:
            await asyncio.wait(set(self._tails.values()))
