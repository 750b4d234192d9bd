"""Test calls ("call my phone") over ARI: ``serve http`` dials a tenant's endpoint, plays the tenant's class to
the phone once it answers, and hangs up after ``test_call_seconds`` (the rules and states are
:mod:`ooma_moh.testcall`'s; docs/http.md, "Test call").

How, on Asterisk (checked in its source, res/ari/resource_channels.c, and on the lab):

- ``POST /channels?endpoint=<dial string>&app=<ari_app>-test-call&channelId=…&timeout=30`` —
  Asterisk subscribes the application to the new channel (and a Local channel's other half) at
  once, so it gets the ringing and, if the phone never answers, ``ChannelDestroyed`` with the
  hang-up cause (17 busy, 19 the ring timeout). Once answered, the channel enters the Stasis
  application (``StasisStart``). The application must have its events WebSocket open by then, or
  Stasis fails and the call is hung up: the dialler opens it (no extra subscription) before its
  first call, and closes it when no call is left. Its name is the server's own,
  ``<ari_app>-test-call-<8 hex digits>`` (:func:`~ooma_moh.testcall.stasis_app`).
- On ``StasisStart``: ``CHANNEL(musicclass)`` = the tenant's class, resolved as for a held caller
  (:func:`ooma_moh.resolve.class_of` over the server's :class:`~ooma_moh.resolve.ClassResolver`:
  ``default`` for a tenant without a file), then ``POST /channels/{id}/moh`` with that class: the
  phone hears what a held caller of the tenant hears, from this node's Asterisk.
- After ``test_call_seconds``: ``DELETE /channels/{id}``; ``ChannelDestroyed`` ends the call.

Every wait is bounded: a call whose events do not come (a WebSocket lost and not back) is hung up
and settled by its own task, so a tenant is never left "in progress".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..config import Settings
from ..errors import AriRequestFailed, AsteriskError
from ..logsafe import logfmt, printable
from ..resolve import ClassResolver, Resolution, class_of
from ..testcall import CALLER_ID, GRACE_S, RING_S, Call, CallBook, FailReason, dial_string, stasis_app
from .client import AriClient
from .listener import EventHandler, EventListener

log = logging.getLogger(__name__)

#: how long placing a call waits for the events WebSocket before saying ARI is unreachable
CONNECT_S = 5.0
#: ARI's answers to an origination that mean the dial string reaches nothing: 400 (not a dial
#: string), 404, 500 (Asterisk could not create the channel: no such endpoint or technology)
UNREACHABLE_STATUSES = frozenset({400, 404, 500})
#: what a call's task ends the call with when ARI fails while it plays
HANG_UP_S = 2.0


class CallAri(Protocol):
    """What test calls need of ARI's REST side (:class:`~ooma_moh.ari.client.AriClient`)."""

    async def originate(self, endpoint: str, *, app: str, channel_id: str, timeout_s: int, caller_id: str) -> None: ...
    async def hangup(self, channel_id: str) -> None: ...
    async def get_channel(self, channel_id: str) -> dict[str, Any]: ...
    async def set_variable(self, channel_id: str, name: str, value: str) -> None: ...
    async def start_moh(self, channel_id: str, moh_class: str) -> None: ...
    async def close(self) -> None: ...


class Listener(Protocol):
    """An events WebSocket of one application (:class:`~ooma_moh.ari.listener.EventListener`)."""

    connected: asyncio.Event

    async def run(self) -> None: ...
    async def stop(self) -> None: ...


#: makes the listener of the test calls' application: (application, on_event, on_connect) -> Listener
Listen = Callable[[str, EventHandler, Callable[[], Awaitable[None]]], Listener]
#: runs a blocking function off the event loop (the server's catalog thread)
Runner = Callable[..., Awaitable[Any]]


class AriUnavailable(AsteriskError):
    """ARI could not be reached to place a test call: nothing was placed."""


def ari_line(settings: Settings) -> tuple[CallAri, Listen]:
    """The REST client and the events listener of test calls, from the ARI settings."""
    client = AriClient(settings.ari_url, settings.ari_user, settings.ari_password, max_connections=4)

    def listen(app: str, on_event: EventHandler, on_connect: Callable[[], Awaitable[None]]) -> Listener:
        return EventListener(client, app, on_event, on_connect=on_connect, event_sources=())

    return client, listen


class Dialler:
    """Places test calls and follows them until they are over (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        ari: CallAri,
        listen: Listen,
        classes: ClassResolver,
        run: Runner,
        book: CallBook | None = None,
    ) -> None:
        self.ari, self.listen, self.classes, self.run = ari, listen, classes, run
        self.template, self.app = settings.test_call_dial, stasis_app(settings.ari_app, secrets.token_hex(4))
        self.book = book or CallBook(settings.test_call_seconds)
        self._listener: Listener | None = None
        self._listening: asyncio.Task[None] | None = None
        self._changed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def place(self, tenant: str, endpoint: str, by: str) -> Call:
        """Dial ``endpoint`` for ``tenant``, asked by ``by``: the call (ringing, or failed
        ``unreachable`` when Asterisk cannot dial it). :class:`~ooma_moh.testcall.CallRefused` by
        the rules; :class:`AriUnavailable` (nothing placed, nothing counted) without ARI."""
        call = self.book.admit(tenant, endpoint, dial_string(self.template, endpoint), by)
        self._changed[call.id] = asyncio.Event()
        # shielded: a request cancelled half-way never leaves a call counted and unfollowed
        return await asyncio.shield(self._place(call))

    async def _place(self, call: Call) -> Call:
        try:
            await self._connected()
            await self.ari.originate(
                call.dial, app=self.app, channel_id=call.channel_id, timeout_s=RING_S, caller_id=CALLER_ID
            )
        except AriRequestFailed as exc:
            if exc.status not in UNREACHABLE_STATUSES:
                raise await self._withdraw(call, exc) from None
            self.book.originated(call)
            self.book.lost(call, FailReason.UNREACHABLE)  # placed, and counted: Asterisk cannot dial it
            self._log_placed(call, f"refused by Asterisk: {printable(exc, 200)}")
            await self._finish(call)
            return call
        except AsteriskError as exc:
            raise await self._withdraw(call, exc) from None
        except Exception:  # an answer we cannot read: maybe dialled, so counted, but never left "ringing"
            log.exception("test-call call=%s: the origination failed unexpectedly", call.id)
            self.book.originated(call)
            await self._give_up(call, FailReason.ARI_DOWN)
            self._log_placed(call, "the origination failed unexpectedly")
            await self._finish(call)
            return call
        self.book.originated(call)
        self._log_placed(call, None)
        task = asyncio.create_task(self._follow(call), name=f"test-call-{call.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call

    async def close(self) -> None:
        """The server stops: hang up every call in progress (briefly), stop listening."""
        active = [c for c in self.book.active() if c.originated]
        if active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(self._hang_up(c) for c in active)), HANG_UP_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_listening()
        await self.ari.close()

    # -- events --------------------------------------------------------------------------------
    async def on_event(self, event: dict[str, Any]) -> None:
        """An event of the test calls' application: wakes the call's task if it changed the call."""
        call = self.book.apply(event)
        if call is not None and (changed := self._changed.get(call.id)) is not None:
            changed.set()

    async def on_connect(self) -> None:
        """After a (re)connection: a call whose channel is gone ended while we were not
        listening (its events are lost)."""
        for call in [c for c in self.book.active() if c.originated]:
            try:
                await self.ari.get_channel(call.channel_id)
            except AriRequestFailed as exc:
                if exc.status == 404:
                    self.book.ended(call)
                    self._wake(call)

    # -- one call ------------------------------------------------------------------------------
    async def _follow(self, call: Call) -> None:
        """Ringing until answered or over; then the music; then the hang-up after the call's time."""
        try:
            if not await self._until(call, lambda: call.answered_at is not None or call.over, RING_S + GRACE_S):
                await self._give_up(call, FailReason.NO_ANSWER)
                return
            if call.over:
                return
            resolution = await class_of(self.classes, call.tenant, self.run)
            await self._start_music(call, resolution)
            if not await self._until(call, lambda: call.over, self.book.seconds):
                await self._hang_up(call)
                if not await self._until(call, lambda: call.over, GRACE_S):
                    self.book.ended(call)  # hung up, its end not reported: over all the same
        except AsteriskError as exc:
            log.warning("test-call call=%s: ARI failed: %s", call.id, printable(exc, 300))
            await self._give_up(call, FailReason.ARI_DOWN)
        except Exception:
            log.exception("test-call call=%s failed", call.id)
            await self._give_up(call, FailReason.ARI_DOWN)
        finally:
            if not call.over:  # cancelled (the server stops): over all the same
                self.book.ended(call)
            await self._finish(call)

    async def _start_music(self, call: Call, resolution: Resolution) -> None:
        """The held callers' class on the answered channel, then its music."""
        try:
            await self.ari.set_variable(call.channel_id, "CHANNEL(musicclass)", resolution.moh_class)
            await self.ari.start_moh(call.channel_id, resolution.moh_class)
        except AriRequestFailed as exc:
            if exc.status not in (404, 409):  # 404, 409: the phone hung up meanwhile, its end follows
                raise
            return
        self.book.playing(call, resolution.moh_class)
        log.info(
            "test-call call=%s playing class=%s%s",
            call.id,
            logfmt(resolution.moh_class),
            f" because={logfmt(resolution.reason)}" if resolution.reason else "",
        )

    async def _until(self, call: Call, done: Callable[[], bool], within_s: float) -> bool:
        """Wait until ``done()`` (checked each time the call changes), at most ``within_s``."""
        changed = self._changed[call.id]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not done():
            changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        return True

    async def _give_up(self, call: Call, reason: FailReason) -> None:
        """No word from Asterisk in time: hang the call up if it can, and settle it."""
        if not call.over:
            with contextlib.suppress(AsteriskError, TimeoutError):
                await asyncio.wait_for(self._hang_up(call), HANG_UP_S)
            connected = self._listener is not None and self._listener.connected.is_set()
            self.book.lost(call, reason if connected else FailReason.ARI_DOWN)

    async def _hang_up(self, call: Call) -> None:
        try:
            await self.ari.hangup(call.channel_id)
        except AriRequestFailed as exc:
            if exc.status != 404:  # gone already
                raise

    def _wake(self, call: Call) -> None:
        if (changed := self._changed.get(call.id)) is not None:
            changed.set()

    async def _finish(self, call: Call) -> None:
        """The call is over: say so once, and stop listening if no call is left."""
        self._changed.pop(call.id, None)
        log.info(
            "test-call call=%s tenant=%s endpoint=%s state=%s reason=%s cause=%s",
            call.id,
            logfmt(call.tenant),
            logfmt(call.endpoint),
            call.state.value,
            logfmt(call.reason.value if call.reason else "-"),
            call.cause if call.cause is not None else "-",
        )
        if not self.book.active():
            await self._stop_listening()

    def _log_placed(self, call: Call, problem: str | None) -> None:
        log.info(
            "test-call call=%s tenant=%s endpoint=%s dial=%s by=%s%s",
            call.id,
            logfmt(call.tenant),
            logfmt(call.endpoint),
            logfmt(call.dial),
            logfmt(call.by),
            f" problem={logfmt(problem)}" if problem else "",
        )

    # -- the events WebSocket --------------------------------------------------------------------
    async def _connected(self) -> None:
        """The application's events WebSocket open (opened now if need be), within CONNECT_S."""
        if self._listener is None:
            self._listener = self.listen(self.app, self.on_event, self.on_connect)
            self._listening = asyncio.create_task(self._listener.run(), name="test-call-events")
        try:
            await asyncio.wait_for(self._listener.connected.wait(), CONNECT_S)
        except TimeoutError:
            raise AriUnavailable(f"no ARI events connection within {CONNECT_S:g} s") from None

    async def _withdraw(self, call: Call, exc: AsteriskError) -> AriUnavailable:
        """ARI did not take the call: forget it, say why; the error to raise (answered 503)."""
        self.book.withdraw(call)
        self._changed.pop(call.id, None)
        log.warning(
            "test-call tenant=%s endpoint=%s by=%s not placed: %s",
            logfmt(call.tenant),
            logfmt(call.endpoint),
            logfmt(call.by),
            printable(exc, 300),
        )
        if not self.book.active():
            await self._stop_listening()
        return AriUnavailable(f"ARI is unreachable: {printable(exc, 200)}")

    async def _stop_listening(self) -> None:
        listener, listening = self._listener, self._listening
        self._listener = self._listening = None
        if listener is not None:
            await listener.stop()
        if listening is not None:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
