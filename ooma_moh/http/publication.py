"""What a tenant's music is doing on its way to callers, and the background work that gets it there.

A change made through the API goes live without anyone running ``sync``: the server converts the
upload (``converting``), then publishes that tenant's class (``publishing``) in a worker thread,
never on the event loop. ``live`` is not remembered here but read from the truth — the class
Asterisk reads (realtime row or static include) names the tenant's current version, or, for a
tenant on default music, no class of its is published — so it survives restarts and changes made
from the CLI (:mod:`ooma_moh.memview` keeps the last read until a source says it changed, or
:meth:`Publications.changes` moves). A tenant found not live with nothing in progress gets a
publication started (:mod:`ooma_moh.golive` decides the state; this module only tracks the work in
progress).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from ..errors import OomaMohError
from ..golive import State, Status
from ..logsafe import printable

log = logging.getLogger(__name__)
__all__ = ["Publications", "State", "Status"]


class Publications:
    """Tracks converting/publishing/error per tenant and runs publications in ``executor``.

    ``publish(tenant)`` is the blocking work (a sync of that one tenant); it raises
    ``OomaMohError`` when it cannot. Any exception it raises is recorded as ``error`` with a reason
    that names no path (a bug's traceback goes to the log once); a failed publication may be
    retried after ``retry_s[n]`` seconds, the n-th failure in a row (:meth:`retry_due`).
    """

    def __init__(
        self,
        executor: Executor,
        publish: Callable[[str], None],
        retry_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0),
    ) -> None:
        self.executor = executor
        self.publish = publish
        self.retry_s = retry_s
        self._status: dict[str, Status] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._failed: dict[str, tuple[int, float]] = {}  # failures in a row, monotonic time of the last
        self._uploading: set[str] = set()
        self._changes: dict[str, int] = {}

    def changes(self, tenant_id: str) -> int:
        """How many publications of the tenant this server has started or seen end: a read of the
        truth made before the count moved may predate this server's own change (an upload, a
        deletion, a restore, a saved draft) or what its publication did."""
        return self._changes.get(tenant_id, 0)

    def _changed(self, tenant_id: str) -> None:
        self._changes[tenant_id] = self._changes.get(tenant_id, 0) + 1

    def tracked(self, tenant_id: str) -> Status | None:
        """The remembered status (converting, publishing, error), or None: then read the truth."""
        return self._status.get(tenant_id)

    def begin_upload(self, tenant_id: str) -> bool:
        """Claim the tenant's one upload slot (received, then converted); False while another
        upload of the tenant holds it. One tenant so never holds more than one of the workers."""
        if tenant_id in self._uploading:
            return False
        self._uploading.add(tenant_id)
        return True

    def end_upload(self, tenant_id: str) -> None:
        """Release the slot :meth:`begin_upload` claimed."""
        self._uploading.discard(tenant_id)

    def converting(self, tenant_id: str) -> None:
        """An upload for the tenant is being converted."""
        self._status[tenant_id] = Status(State.CONVERTING)

    def forget(self, tenant_id: str) -> None:
        """The change was refused, or a failed one is live after all: nothing to publish (unless
        a publication still runs)."""
        if tenant_id not in self._tasks:
            self._status.pop(tenant_id, None)
            self._failed.pop(tenant_id, None)

    def retry_due(self, tenant_id: str) -> bool:
        """Whether the tenant's last publication failed long enough ago to try again."""
        failures, at = self._failed.get(tenant_id, (0, 0.0))
        if not failures or tenant_id in self._tasks:
            return False
        return time.monotonic() - at >= self.retry_s[min(failures, len(self.retry_s)) - 1]

    def start(self, tenant_id: str) -> Status:
        """Publish the tenant's class in the background; a publication already running is
        followed by one more, so the last change always gets published."""
        self._status[tenant_id] = Status(State.PUBLISHING)
        self._changed(tenant_id)
        if tenant_id in self._tasks:
            self._again.add(tenant_id)
        else:
            self._tasks[tenant_id] = asyncio.get_running_loop().create_task(self._run(tenant_id))
        return self._status[tenant_id]

    async def _run(self, tenant_id: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._again.discard(tenant_id)
                try:
                    await loop.run_in_executor(self.executor, self.publish, tenant_id)
                except Exception as exc:  # noqa: BLE001 - whatever it is, the tenant shows error, not publishing forever
                    self._failed_now(tenant_id, exc)
                else:
                    self._status.pop(tenant_id, None)  # live: read from the truth from now on
                    self._failed.pop(tenant_id, None)
                finally:
                    self._changed(tenant_id)  # what Asterisk reads may have changed
                if tenant_id not in self._again:
                    return
                self._status[tenant_id] = Status(State.PUBLISHING)
        finally:
            self._tasks.pop(tenant_id, None)

    def _failed_now(self, tenant_id: str, exc: Exception) -> None:
        failures = self._failed.get(tenant_id, (0, 0.0))[0] + 1
        self._failed[tenant_id] = (failures, time.monotonic())
        if isinstance(exc, OomaMohError):
            reason = str(exc)
            log.warning("publication of tenant %s failed: %s", printable(tenant_id), printable(exc))
        else:  # a bug or an error nobody translated: its text may hold a path, its traceback says where
            reason = f"the publication failed unexpectedly ({type(exc).__name__}); the server retries it"
            log.exception("publication of tenant %s failed unexpectedly", printable(tenant_id))
        self._status[tenant_id] = Status(State.ERROR, reason)

    async def drain(self) -> None:
        """Wait for publications in progress (shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks.values()))
