"""The ARI events WebSocket: one task reads it, reconnects with backoff, and tells the owner.

``subscribeAll=true`` (the default) delivers events for channels owned by other Stasis
applications too, which a hold handler running next to a provider's own application needs.
After every (re)connection ``on_connect`` runs before any event is delivered, so the owner can
resync its state from ``GET /channels`` and ``GET /bridges``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ..errors import AsteriskError
from .client import AriClient

log = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]


class EventListener:
    """Keeps one events WebSocket open for ``app`` and feeds each event to ``on_event``."""

    def __init__(self, client: AriClient, app: str, on_event: EventHandler, *,
                 on_connect: Callable[[], Awaitable[None]] | None = None, subscribe_all: bool = True,
                 min_backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        self.client = client
        self.app = app
        self.on_event = on_event
        self.on_connect = on_connect
        self.subscribe_all = subscribe_all
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connections = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        """The events WebSocket URL."""
        base = self.client.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/events?app={self.app}&subscribeAll={'true' if self.subscribe_all else 'false'}"

    async def run(self) -> None:
        """Connect, deliver events, reconnect on loss; returns after :meth:`stop`."""
        backoff = self.min_backoff
        while not self._stopping:
            try:
                async with self.client.session.ws_connect(self.url, heartbeat=10.0) as ws:
                    self._ws = ws
                    self.connections += 1
                    backoff = self.min_backoff
                    log.info("ARI events connected (app %s, connection %d)", self.app, self.connections)
                    if self.on_connect is not None:
                        await self.on_connect()
                    self.connected.set()
                    await self._read(ws)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, AsteriskError) as exc:
                if not self._stopping:
                    log.warning("ARI events connection failed: %s; retrying in %.1f s", exc, backoff)
            finally:
                self._ws = None
                self.connected.clear()
            if self._stopping:
                break
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            try:
                event = json.loads(message.data)
            except ValueError:
                log.warning("ignoring a non-JSON ARI event: %.80r", message.data)
                continue
            try:
                await self.on_event(event)
            except Exception:  # one bad event must not stop the listener
                log.exception("handler failed on %s event", event.get("type"))
        if not self._stopping:
            log.warning("ARI events connection closed by Asterisk")

    async def drop(self) -> None:
        """Close the current WebSocket (the listener reconnects): for tests and resync."""
        if self._ws is not None:
            await self._ws.close()

    async def stop(self) -> None:
        """Stop for good."""
        self._stopping = True
        await self.drop()
