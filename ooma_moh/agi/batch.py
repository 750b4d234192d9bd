"""Blocking catalog calls of the FastAGI server, run in its one catalog thread in batches.

``loop.run_in_executor`` per read cost a Future pair, a queue hand-off, a wake-up of the thread
and one of the event loop (self-pipe) for every read, about a third of a request's cost when
reads were frequent. Here the calls made while one batch runs wait together and go as the next
batch: one hand-off and one wake-up of the loop per batch, whatever its size. The thread stays
the only one touching the catalog, and a call still looks like ``run_in_executor`` to its
caller (an awaitable future per call, its result or exception, as :func:`~ooma_moh.resolve.class_of`
expects).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

Call = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class CatalogBatches:
    """``await batches(func, *args)``: ``func(*args)`` in ``executor``'s thread, batched."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._queue: list[Call] = []
        self._busy = False

    def __call__(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((func, args, future))
        if not self._busy:  # the calls made in the rest of this turn of the loop join the batch
            self._busy = True
            loop.call_soon(self._submit, loop)
        return future

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queue = self._queue, []
        try:
            self._executor.submit(self._run, loop, batch)
        except RuntimeError as exc:  # the executor was shut down (the server is closing)
            self._finish(loop, [(future, exc, False) for _, _, future in batch])

    def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Call]) -> None:
        """(catalog thread) Each call in turn; the results go back to the loop together."""
        results: list[tuple[asyncio.Future[Any], Any, bool]] = []
        for func, args, future in batch:
            try:
                results.append((future, func(*args), True))
            except BaseException as exc:  # the caller's to see, as with run_in_executor
                results.append((future, exc, False))
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._finish, loop, results)

    def _finish(self, loop: asyncio.AbstractEventLoop, results: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
        for future, value, ok in results:
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if self._queue:  # calls made while this batch ran
            self._submit(loop)
        else:
            self._busy = False
