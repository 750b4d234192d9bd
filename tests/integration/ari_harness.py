"""A Stasis application on the lab's ARI, driven from synchronous tests.

It runs ooma-moh's own ARI client and events listener on an event loop in a background thread.
Tests use it to own channels that enter ``Stasis(ooma-lab)`` and to hold/unhold them, which makes
chan_pjsip send a real re-INVITE a=sendonly over the lab's loopback endpoint.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ooma_moh.ari.client import AriClient
from ooma_moh.ari.listener import EventListener
from ooma_moh.lab import LabAsterisk


class AriHarness:
    """The ``ooma-lab`` Stasis application."""

    def __init__(self, lab: LabAsterisk, app: str = "ooma-lab") -> None:
        self.loop = asyncio.new_event_loop()
        self.client = AriClient(lab.ari_url, lab.ari_user, lab.ari_password)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.listener = EventListener(self.client, app, self._on_event, subscribe_all=False)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._task: asyncio.Future[None] | None = None

    async def _on_event(self, event: dict[str, Any]) -> None:
        self.events.put(event)

    def start(self) -> "AriHarness":
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self.listener.run(), self.loop)
        self.call(asyncio.wait_for(self.listener.connected.wait(), 10))
        return self

    def call(self, coro: Any, timeout: float = 15.0) -> Any:
        """Run a coroutine on the harness loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_event(self, kind: str, match: Callable[[dict[str, Any]], bool] = lambda e: True,
                   timeout: float = 15.0) -> dict[str, Any]:
        """The next event of type ``kind`` satisfying ``match`` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} event within {timeout} s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event.get("type") == kind and match(event):
                return event

    def request(self, method: str, path: str, **params: Any) -> Any:
        return self.call(self.client.request(method, path, **params))

    def hold(self, channel_id: str) -> None:
        self.request("POST", f"/channels/{channel_id}/hold")

    def unhold(self, channel_id: str) -> None:
        self.request("DELETE", f"/channels/{channel_id}/hold")

    def stop(self) -> None:
        self.call(self.listener.stop())
        if self._task is not None:
            self._task.result(10)
        self.call(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
