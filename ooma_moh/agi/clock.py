"""The time limits of one FastAGI connection with one timer: each read or write waits at most
``io_timeout``, the whole connection lasts at most ``deadline``.

``asyncio.wait_for`` around every read made a Task, a timer and two extra turns of the event loop
per line (ten lines a request): most of what the server cost beyond a bare one. Here a read only
stamps when its wait began (``clock.since = monotonic()``, ``None`` once it is over); the
single timer, first due at ``min(start + io_timeout, start + deadline)``, looks at the stamp when it
fires and either cancels the connection's task or sets itself again for when the current wait
would be too long. A request answered in a millisecond never sees it fire.
"""

from __future__ import annotations

import asyncio
from time import monotonic

#: fired a little early (the loop runs timers due within its clock resolution): still counts
_SLACK_S = 0.001


class ConnectionClock:
    """Used as ``async with ConnectionClock(io, deadline) as clock:`` around a connection's work;
    leaving it on the timer's cancellation raises ``TimeoutError`` (``expired`` then says which
    limit: ``"deadline"`` or ``"io"``), any other cancellation passes through."""

    __slots__ = ("_loop", "_task", "_handle", "_cancelling", "io_timeout", "end", "since", "expired")

    def __init__(self, io_timeout: float, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.io_timeout = io_timeout
        self.end = monotonic() + deadline
        #: when (``time.monotonic()``) the read or write in progress began to wait; None between them
        self.since: float | None = None
        self.expired: str | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> ConnectionClock:
        task = asyncio.current_task()
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        self._arm(monotonic())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        assert self._task is not None
        if (
            self.expired is not None
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError(self.expired) from exc

    def _check(self) -> None:
        now = monotonic()
        since = self.since
        if now + _SLACK_S >= self.end:
            self._expire("deadline")
        elif since is not None and now + _SLACK_S >= since + self.io_timeout:
            self._expire("io")
        else:  # the current wait (or the next one) began later: due when it would be too long
            self._arm(since if since is not None else now)

    def _arm(self, start: float) -> None:
        """The timer, due when a wait begun at ``start`` would be too long, or at the deadline."""
        self._handle = self._loop.call_later(min(self.end, start + self.io_timeout) - monotonic(), self._check)

    def _expire(self, which: str) -> None:
        self._handle = None
        self.expired = which
        assert self._task is not None
        self._task.cancel()
