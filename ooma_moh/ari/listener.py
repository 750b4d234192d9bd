"""The ARI events WebSocket: one task reads it, reconnects with backoff, and tells the owner.

Events for channels and bridges that other Stasis applications own come from an explicit
subscription to ``channel:`` and ``bridge:`` (every channel, every bridge), made right after each
connection; the WebSocket itself is opened with ``subscribeAll=false``. ``subscribeAll=true``
would also subscribe the application to every device state, and Asterisk 22 can deadlock when such
a WebSocket closes while a device state change is being delivered: the application then stays
registered to the dead connection forever and every later connection for it hangs (measured on
the lab Asterisk 22.10.1: wedged after 1-5 close/reconnect cycles under device-state churn; with
the explicit subscription, 0 in 300; see docs/ari.md).

The subscription also proves the application is registered: on a quick reconnect Asterisk can
drop the registration it just made (about 1 in 25 immediate reconnects in the lab), leaving a
WebSocket that never delivers an event. A refused subscription, or a later check finding the
application gone, closes the WebSocket and the listener connects again.

With ``event_types``, the application's event filter (``PUT /applications/{app}/eventFilter``)
is set to those types after each subscription, so Asterisk does not write to the WebSocket the
events the owner ignores (with every channel subscribed, most are ``ChannelVarset``,
``ChannelDialplan`` and the like). An Asterisk that refuses the filter only costs that: it is
logged once and events come unfiltered.

After every (re)connection ``on_connect`` runs before any event is delivered, so the owner can
resync its state from ``GET /channels`` and ``GET /bridges``.

Asterisk refusing the credentials (401, 403) is not a passing fault that a retry cures: each
attempt logs it as an ERROR that says which settings to fix, and attempts are ``max_backoff``
apart (the listener keeps trying, so a corrected ari.conf is picked up without a restart).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import aiohttp

from .. import metrics
from ..errors import AriRequestFailed, AsteriskError
from ..logsafe import printable
from .client import AriClient

log = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]

#: What a hold handler needs: every channel and every bridge, whoever owns them.
ALL_CHANNELS_AND_BRIDGES = ("channel:", "bridge:")
#: HTTP statuses by which Asterisk refuses the ARI user and password
REFUSED_CREDENTIALS = (401, 403)


def refused_status(exc: BaseException) -> int | None:
    """The status if ``exc`` is Asterisk refusing our credentials (the WebSocket handshake or a
    request), else None."""
    status = exc.status if isinstance(exc, (aiohttp.ClientResponseError, AriRequestFailed)) else None
    return status if status in REFUSED_CREDENTIALS else None


class EventListener:
    """Keeps one events WebSocket open for ``app`` and feeds each event to ``on_event``."""

    def __init__(
        self,
        client: AriClient,
        app: str,
        on_event: EventHandler,
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        event_sources: Sequence[str] = ALL_CHANNELS_AND_BRIDGES,
        event_types: Collection[str] = (),
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
        check_interval: float = 10.0,
    ) -> None:
        self.client = client
        self.app = app
        self.on_event = on_event
        self.on_connect = on_connect
        self.event_sources = tuple(event_sources)
        self.event_types = sorted(event_types)
        self._filter_refused = False
        self.check_interval = check_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connections = 0
        #: why the last attempt to connect failed (for /readyz); None once connected
        self.last_problem: str | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        """The events WebSocket URL."""
        base = self.client.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/events?app={self.app}&subscribeAll=false"

    async def run(self) -> None:
        """Connect, deliver events, reconnect on loss; returns after :meth:`stop`."""
        backoff = self.min_backoff
        while not self._stopping:
            try:
                async with self.client.session.ws_connect(self.url, heartbeat=10.0) as ws:
                    self._ws = ws
                    if not await self._registered(subscribe=True):
                        raise AsteriskError(
                            f"Asterisk dropped the registration of application {self.app!r}"
                            " right after connecting (a race in Asterisk on quick reconnects)"
                        )
                    self.connections += 1
                    if self.connections > 1:
                        metrics.ARI_RECONNECTS.inc()
                    backoff = self.min_backoff
                    self.last_problem = None
                    log.info("ARI events connected (app %s, connection %d)", self.app, self.connections)
                    if self.on_connect is not None:
                        await self.on_connect()
                    self.connected.set()
                    metrics.ARI_CONNECTED.set(1)
                    watchdog = asyncio.create_task(self._watch(ws), name="ari-app-watchdog")
                    try:
                        await self._read(ws)
                    finally:
                        watchdog.cancel()
                        await asyncio.gather(watchdog, return_exceptions=True)
            except (TimeoutError, aiohttp.ClientError, OSError, AsteriskError) as exc:
                if (status := refused_status(exc)) is not None:
                    backoff = self.max_backoff  # a retry cannot cure it soon: one line per attempt, not a burst
                    self.last_problem = (
                        f"ARI credentials refused (Asterisk answered {status}): check"
                        " OOMA_MOH_ARI_USER / OOMA_MOH_ARI_PASSWORD against ari.conf"
                    )
                    if not self._stopping:
                        log.error(
                            "ARI credentials refused: Asterisk at %s answered %d (%s); set OOMA_MOH_ARI_USER /"
                            " OOMA_MOH_ARI_PASSWORD to a user and password of Asterisk's ari.conf%s; retrying"
                            " in %.1f s",
                            printable(self.client.base_url, 200),
                            status,
                            "wrong user or password" if status == 401 else "this user may not do that",
                            "" if status == 401 else " that is not read_only",
                            backoff,
                        )
                else:
                    self.last_problem = f"connection failed: {printable(exc, 200)}"
                    if not self._stopping:
                        log.warning(
                            "ARI events connection failed: %s; retrying in %.1f s", printable(exc, 300), backoff
                        )
            finally:
                self._ws = None
                self.connected.clear()
                metrics.ARI_CONNECTED.set(0)
            if self._stopping:
                break
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    async def _registered(self, *, subscribe: bool) -> bool:
        """Whether Asterisk has the application registered (a 404 says it has not); with
        ``subscribe``, the check is the subscription to :attr:`event_sources` itself."""
        try:
            if subscribe and self.event_sources:
                await self.client.subscribe(self.app, self.event_sources)
                await self._filter()
            else:
                await self.client.get_application(self.app)
        except AriRequestFailed as exc:
            if exc.status != 404:
                raise
            return False
        return True

    async def _filter(self) -> None:
        """Allow only :attr:`event_types` (none: no filter); a refusal is logged once."""
        if not self.event_types:
            return
        allowed = {"allowed": [{"type": kind} for kind in self.event_types]}
        try:
            await self.client.request("PUT", f"/applications/{self.app}/eventFilter", body=allowed)
        except AriRequestFailed as exc:
            if not self._filter_refused:
                log.warning("ARI event filter refused (%s): every event of the subscription comes", printable(exc))
            self._filter_refused = True

    async def _watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Every ``check_interval`` s: is the application still registered? If not, close the
        WebSocket so that :meth:`run` connects again."""
        while not ws.closed:
            await asyncio.sleep(self.check_interval)
            try:
                if not await self._registered(subscribe=False):
                    log.warning("application %s is no longer registered in Asterisk; reconnecting", self.app)
                    await ws.close()
                    return
            except AsteriskError:
                pass  # Asterisk unreachable or erring: the WebSocket heartbeat notices a dead link

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            try:
                event = json.loads(message.data)
            except ValueError:
                log.warning("ignoring a non-JSON ARI event: %.80r", message.data)
                continue
            if event.get("type") == "ApplicationReplaced":
                log.error(
                    "another connection took over application %s: this process gets no more events"
                    " (two handlers with the same OOMA_MOH_ARI_APP?)",
                    self.app,
                )
            try:
                await self.on_event(event)
            except Exception:  # one bad event must not stop the listener
                log.exception("handler failed on %s event", printable(event.get("type")))
        if not self._stopping:
            log.warning("ARI events connection closed")

    async def drop(self) -> None:
        """Close the current WebSocket (the listener reconnects): for tests and resync."""
        if self._ws is not None:
            await self._ws.close()

    async def stop(self) -> None:
        """Stop for good."""
        self._stopping = True
        await self.drop()
