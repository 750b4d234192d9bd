"""What comes after a hold's first plan: the fresh bridge's correction, and the mark put off.

A bridge recorded through ARI turns ``softmix`` (and stops forwarding holds) with no membership
event: the recorder is an internal channel that events do not show, and no event says the
technology changed. What does say it (measured on the lab, 2026-12-05): ``RecordingStarted`` and
``RecordingFinished`` with ``target_uri`` ``bridge:<id>``, which an application subscribed to all
bridges receives (Asterisk forwards the recorder channel's topic to the bridge's). So a bridge's
technology is Asterisk's own (:attr:`~.state.CallState.known_technology`) after a read
(``GET /bridges/{id}``) or a recording's start, until an event about the bridge replaces it:

1. each 2-party bridge is read :data:`SETTLE_S` after its membership last changed
   (:meth:`FollowUps.settle`, :func:`refresh`), its technology kept unless an event about the
   bridge came meanwhile;
2. ``RecordingStarted`` on a bridge makes it ``softmix`` at once; a recording's end or failure,
   or a playback on the bridge (its announcer may stay), makes it unknown, and it is read again
   :data:`SETTLE_S` later (:func:`media`);
3. a hold in a bridge whose technology is known sends no read; otherwise it is planned on what
   events said, with ``GET /bridges/{id}`` in flight alongside, and :func:`correct` carries out
   what the answer adds.

What this leaves: a bridge whose technology changes with no event at all — MOH started on the
whole bridge by another application (``POST /bridges/{id}/moh``: an announcer, no playback event)
— is taken for the forwarding bridge it was read as; a hold there plays what the bridge plays.

The ``OOMA_MOH_HOLD`` mark on the holder lets a restarted handler's resync find the hold
(:mod:`.resync`). Music the handler starts is marked in the same moment (a handler killed then
would leave music playing that nobody could find). A hold whose music is Asterisk's (forwarded,
or a conference) needs its mark only if the handler is restarted before the hold ends, so that
request is put off until the burst of holds quiets (measured: during a burst every request the
handler sends delays Asterisk's events and answers for every other hold; docs/benchmarks.md).

Rules of the put-off mark, in order:

1. it is sent :data:`QUIET_S` after the last ``ChannelHold`` seen, and never more than
   :data:`MAX_WAIT_S` after it was put off (under a steady stream of holds it still goes);
2. it goes through the handler's per-bridge dispatcher (:mod:`.dispatch`), so it stays in order
   with the bridge's later events (an unhold queued after it waits for it);
3. a hold already over (unhold, hang-up, resync) is not marked, and a hold never marked is not
   cleared when it ends (:attr:`~.state.ActiveHold.marked`);
4. before a resync and at shutdown every put-off mark is sent at once (:meth:`FollowUps.flush`);
5. :meth:`~.hold.HoldHandler.handle` (one event to the end, for a provider feeding events itself)
   sends it before it returns; only :meth:`~.hold.HoldHandler.dispatch` puts it off. (The read of a
   settled bridge is timed the same way on both: it is not part of any one event's work.)

What this costs: a handler killed (``kill -9``) within :data:`MAX_WAIT_S` of a forwarded hold
leaves that hold unmarked; its successor does not know it, so if the holder then hangs up while
holding, the held party's music (Asterisk's own) is not stopped by us.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import AsteriskError
from .dispatch import KeyedDispatcher
from .events import Bridge, Event
from .policy import HoldPlan
from .state import ActiveHold

if TYPE_CHECKING:
    from .hold import HoldHandler


#: a follow-up waits for this long without a new hold
QUIET_S = 0.25
#: and never longer than this after it was put off
MAX_WAIT_S = 1.0
#: a 2-party bridge is read again this long after its membership last changed
SETTLE_S = 0.5


class FollowUps:
    """Work put off until holds quiet down, then handed to the dispatcher (rules above)."""

    def __init__(self, dispatcher: KeyedDispatcher, quiet_s: float = QUIET_S, max_wait_s: float = MAX_WAIT_S) -> None:
        self.dispatcher = dispatcher
        self.quiet_s, self.max_wait_s = quiet_s, max_wait_s
        self._waiting: list[tuple[str, Callable[[], Awaitable[None]], str]] = []
        self._last_hold = 0.0
        self._timer: asyncio.Task[None] | None = None
        self.settle_s = SETTLE_S
        self._settling: dict[str, asyncio.TimerHandle] = {}

    def hold_seen(self) -> None:
        """A ``ChannelHold`` arrived: the burst goes on."""
        self._last_hold = time.monotonic()

    def put_off(self, key: str, work: Callable[[], Awaitable[None]], what: str = "") -> None:
        """Run ``work()`` for ``key`` once holds quiet down."""
        self._waiting.append((key, work, what))
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._wait(time.monotonic()), name="hold-follow-ups")

    async def _wait(self, since: float) -> None:
        while self._waiting:
            now = time.monotonic()
            due = min(self._last_hold + self.quiet_s, since + self.max_wait_s)
            if now >= due:
                self._submit()
                since = time.monotonic()  # work put off meanwhile waits its own turn
                continue
            await asyncio.sleep(due - now)

    def _submit(self) -> None:
        waiting, self._waiting = self._waiting, []
        for key, work, what in waiting:
            self.dispatcher.submit(key, work, what)

    def settle(self, bridge: Bridge, work: Callable[[str], Awaitable[None]]) -> None:
        """``work(bridge id)`` :data:`SETTLE_S` after the bridge's last membership change, if it then
        has 2 channels (only there can a silent change of technology stop a forwarded hold);
        nothing once it is destroyed."""
        if (pending := self._settling.pop(bridge.id, None)) is not None:
            pending.cancel()
        if len(bridge.channel_ids) == 2:
            self._settling[bridge.id] = asyncio.get_running_loop().call_later(
                self.settle_s, self._settled, bridge.id, work
            )

    def _settled(self, bridge_id: str, work: Callable[[str], Awaitable[None]]) -> None:
        self._settling.pop(bridge_id, None)
        self.dispatcher.submit(bridge_id, lambda: work(bridge_id), "bridge settled")

    def stop_settling(self) -> None:
        """No more reads of settled bridges (shutdown: the client is about to close)."""
        for pending in self._settling.values():
            pending.cancel()
        self._settling.clear()

    @property
    def waiting(self) -> int:
        """Follow-ups not yet handed to the dispatcher."""
        return len(self._waiting)

    async def flush(self) -> None:
        """Hand every put-off follow-up to the dispatcher now and wait until all work is done,
        follow-ups put off by work that was still queued included."""
        while self._waiting or self.dispatcher.pending:
            self._submit()
            await self.dispatcher.drain()


async def correct(
    handler: HoldHandler,
    known: Bridge,
    fresh: Bridge,
    plan: HoldPlan,
    hold: ActiveHold,
    delay: float,
    since: datetime | None,
) -> tuple[HoldPlan, float]:
    """On the hold's path, once ``GET /bridges/{id}`` answered: what the fresh bridge adds to the
    plan made on events (a bridge that does not forward after all, a party not known) is carried
    out, music and mark together. Returns the plan the bridge really called for and the delay to
    the music. The fresh technology is kept when no event about the bridge came meanwhile (the
    next hold there then starts its music at once)."""
    if handler.state.bridges.get(known.id) is known and set(fresh.channel_ids) == set(known.channel_ids):
        handler.state.put_read(fresh)
    if fresh.forwards_hold == known.forwards_hold and set(fresh.channel_ids) == set(known.channel_ids):
        return plan, delay
    again = await handler._plan_hold(fresh, hold.holder_id, hold.moh_class)
    extra = tuple(c for c in again.start_on if c not in plan.start_on)
    if extra:
        late = await handler._carry_out(HoldPlan(again.action, extra, again.listeners), hold, mark=True, since=since)
        delay = delay or late
    return again, delay


def media(handler: HoldHandler, event: Event) -> None:
    """A recording or playback on a bridge (``event.target_bridge``): a recording started makes
    it softmix — it stops forwarding holds — which is then known without a read; a recording's end
    or a playback (whose announcer may stay in the bridge) leave its technology unknown until the
    bridge is read again, :data:`SETTLE_S` later (holds meanwhile read it on their path)."""
    bridge = handler.state.bridges.get(event.target_bridge or "")
    if bridge is None:
        return
    if event.type == "RecordingStarted":
        handler.state.put_read(dataclasses.replace(bridge, technology="softmix"))
    else:
        handler.state.known_technology.discard(bridge.id)
        handler.followups.settle(bridge, lambda bridge_id: refresh(handler, bridge_id))


async def mark_later(handler: HoldHandler, hold: ActiveHold) -> None:
    """The put-off mark of a hold whose music is Asterisk's; nothing if the hold is over."""
    if handler.state.holds.get(hold.holder_id) is hold:
        await handler._mark(hold)


async def refresh(handler: HoldHandler, bridge_id: str) -> None:
    """Read a bridge whose membership settled: its technology as Asterisk has it, kept if no event
    about the bridge came meanwhile (a hold there then starts its music at once, without waiting
    for its own ``GET /bridges/{id}``)."""
    seen = handler.state.bridges.get(bridge_id)
    if seen is None:
        return
    try:
        fresh = Bridge.from_json(await handler.ari.get_bridge(bridge_id))
    except AsteriskError:  # gone: its events say the rest
        return
    if handler.state.bridges.get(bridge_id) is seen and set(fresh.channel_ids) == set(seen.channel_ids):
        handler.state.put_read(fresh)
