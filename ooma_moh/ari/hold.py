"""The hold handler: every held caller hears the holder's tenant music, from the first frame.

Measured on Asterisk 22 (docs/asterisk-facts.md): left alone, a held party hears ``default`` (the class the
hold suggests); in a softmix bridge (3+ channels, or a recorder/announcer/snoop in it) it hears
nothing; starting MOH only after ``ChannelHold`` leaves ~0.5 s of the wrong music. So:

1. *preset*: whenever bridge membership changes, each real party gets ``CHANNEL(musicclass)`` =
   the class of the one tenant among the *other* parties — a 2-party hold that Asterisk forwards
   then plays the right class from the first frame;
2. *safety net* on ``ChannelHold``: in a forwarding 2-party bridge, check the preset and correct
   it (set the class, restart MOH); where Asterisk does not forward (softmix), start MOH on the
   held party ourselves; with 2+ other real parties (a conference), play nothing;
3. *clean-up* on unhold, on the holder leaving or hanging up, and for channels that join while a
   hold lasts (they get the music too).

The holder's class is also stored on the holder as ``OOMA_MOH_HOLD``, so a restarted handler
(or one whose WebSocket dropped) rebuilds the holds in progress from ``GET /channels`` and
``GET /bridges`` (see :meth:`HoldHandler.resync`). On a hold's path only what makes the held
party hear the music is sent (the music and the mark together), and a read of the bridge only when
its technology is not known since its last change; a forwarded hold's mark follows once the burst
of holds quiets, and each 2-party bridge is read when its membership settles and followed through
recording events, so that a recorded bridge is known before anyone holds (:mod:`.followup`, its
rules in order).

Three parts: :mod:`.state` (what is known), :mod:`.policy` (the rules, pure), and this module,
which gathers the facts over an :class:`~ooma_moh.ari.client.Ari` and carries the plans out.
Feed it events with :meth:`HoldHandler.handle` (from :class:`~ooma_moh.ari.listener.EventListener`,
or from a provider's own ARI application).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from .. import metrics
from ..errors import AriRequestFailed, AsteriskError
from ..holdstats import is_fallback
from ..logsafe import logfmt, printable
from ..model import DEFAULT_CLASS, HOLD_VARIABLE, TENANT_VARIABLE, endpoint_of_channel
from ..resolve import ClassResolver, Resolution, class_of, tenant_of_call, tenant_of_endpoint
from . import outside, policy
from .client import Ari
from .dispatch import KeyedDispatcher
from .events import MEDIA_EVENTS, Bridge, Channel, Event
from .followup import FollowUps, correct, mark_later, media, refresh
from .policy import HoldAction, HoldPlan, Party
from .resync import resync
from .state import ActiveHold, CallState, HoldStats, ms_since
from .tally import TALLY_ONLY, HoldTally

log = logging.getLogger(__name__)
MUSIC_CLASS = "CHANNEL(musicclass)"


class HoldHandler:
    """Keeps :class:`CallState` from ARI events and carries out :mod:`.policy`'s plans."""

    def __init__(
        self,
        ari: Ari,
        resolver: ClassResolver,
        run_blocking: Callable[..., Awaitable[Any]] | None = None,
        parallel: int | None = None,
        tally: HoldTally | None = None,
    ) -> None:
        self.ari = ari
        self.resolver = resolver
        self.run_blocking = run_blocking or asyncio.to_thread
        self.state = CallState()
        self.stats = HoldStats()
        #: hold statistics, counted from the events in :meth:`observe` (:mod:`.tally`)
        self.tally = tally if tally is not None else HoldTally()
        #: background lookups of dialplan holds' tenants, for the statistics
        self._lookups: set[asyncio.Task[None]] = set()
        self.dispatcher = KeyedDispatcher(parallel)
        #: the forwarded hold's mark put off until holds quiet; bridges read once settled
        self.followups = FollowUps(self.dispatcher)
        self._delivery_ms: dict[str, float] = {}
        #: channels ARI may not touch (409 "not in Stasis": the dialplan's own bridges)
        self._outside: set[str] = set()
        self._table: dict[str, Callable[[Event], Awaitable[None]]] = {
            "ChannelEnteredBridge": self.on_entered_bridge,
            "ChannelLeftBridge": self.on_left_bridge,
            "BridgeDestroyed": self.on_bridge_destroyed,
            "ChannelHold": self.on_hold,
            "ChannelUnhold": self.on_unhold,
            "ChannelDestroyed": self.on_channel_destroyed,
        }

    @property
    def event_types(self) -> frozenset[str]:
        """The events the handler uses (the listener asks Asterisk for these only)."""
        return frozenset(self._table) | TALLY_ONLY | MEDIA_EVENTS

    @property
    def holds(self) -> dict[str, ActiveHold]:
        """Holds in progress, by holder."""
        return self.state.holds

    def observe(self, event: Event) -> str:
        """The part of an event that only updates what we know, done at once and in arrival order
        (so the next event is keyed on up-to-date membership); returns the event's key: its
        bridge, the bridge its channel is in, else the channel."""
        if event.target_bridge is not None:  # a recording or playback on a bridge
            media(self, event)
            return event.target_bridge
        if event.channel is not None:
            self.state.channels[event.channel.id] = event.channel
            if event.type == "ChannelHold":  # how late Asterisk delivered it, for the hold's log line
                self._delivery_ms[event.channel.id] = ms_since(event.timestamp)
            self.tally.observe(event, self._others(event.channel.id) if event.type == "ChannelHold" else ())
        if event.bridge is not None:
            if event.type == "BridgeDestroyed":
                self.state.drop_bridge(event.bridge.id)
            else:
                self.state.put_bridge(event.bridge)
            if event.type in ("ChannelEnteredBridge", "ChannelLeftBridge", "BridgeDestroyed"):
                self.followups.settle(event.bridge, lambda bridge_id: refresh(self, bridge_id))
            return event.bridge.id
        if event.channel is not None:
            bridge = self.state.bridge_of(event.channel.id)
            return bridge.id if bridge is not None else event.channel.id
        return ""

    async def handle(self, data: dict[str, Any]) -> None:
        """Process one ARI event (JSON as received) to the end; unrelated events are ignored."""
        if (event := self._event(data)) is not None:
            self.observe(event)
            if event.type in self._table:
                await self._act(event)
                if self.followups.waiting:  # to the end: the hold's follow-up too
                    await self.followups.flush()

    async def dispatch(self, data: dict[str, Any]) -> None:
        """Take one event and return at once: its ARI work runs after the earlier events of its
        bridge, concurrently with other bridges' (see :mod:`.dispatch`). For the listener."""
        if (event := self._event(data)) is not None:
            key = self.observe(event)
            if event.type == "ChannelHold":
                self.followups.hold_seen()
            if event.type in self._table:
                self.dispatcher.submit(key, lambda: self._act(event), event.type)

    def _event(self, data: dict[str, Any]) -> Event | None:
        kind = data.get("type", "")
        known = kind in self._table or kind in TALLY_ONLY or kind in MEDIA_EVENTS
        return Event.from_json(data) if known else None

    def _others(self, channel_id: str) -> list[str]:
        """The other real parties in the channel's bridge, as events told us."""
        bridge = self.state.bridge_of(channel_id)
        members = (self.state.channels.get(c) for c in bridge.channel_ids if c != channel_id) if bridge else ()
        return [m.id for m in members if m is not None and not m.is_helper]

    async def _act(self, event: Event) -> None:
        try:
            await self._table[event.type](event)
        except AsteriskError as exc:  # the channel may be gone by now: log, keep going
            metrics.ARI_EVENT_ERRORS.labels(event.type).inc()
            log.warning(
                "%s on %s: %s",
                printable(event.type),
                printable(event.channel.name) if event.channel else "-",
                printable(exc),
            )

    # -- facts, gathered over ARI ------------------------------------------------------------
    async def _channel(self, channel_id: str) -> Channel:
        if channel_id not in self.state.channels:
            self.state.channels[channel_id] = Channel.from_json(await self.ari.get_channel(channel_id))
        return self.state.channels[channel_id]

    async def _tenant_of(self, channel: Channel) -> str | None:
        """:func:`~ooma_moh.resolve.tenant_of_call` of the channel, remembered for its lifetime."""
        if channel.id not in self.state.tenants:
            variable: str | None
            if TENANT_VARIABLE in channel.variables:  # ari.conf exports it
                variable = channel.variables[TENANT_VARIABLE]
            else:
                variable = await self.ari.get_variable(channel.id, TENANT_VARIABLE)
            tenant, _ = tenant_of_call(variable=variable, accountcode=channel.accountcode)
            endpoint = endpoint_of_channel(channel.name)
            if tenant is None and endpoint is not None and not channel.is_helper:
                mapped = await tenant_of_endpoint(self.resolver, endpoint, self.run_blocking)
                tenant, _ = tenant_of_call(endpoint_tenant=mapped)
            self.state.tenants[channel.id] = tenant
        return self.state.tenants[channel.id]

    async def _class_of(self, tenant: str | None) -> Resolution:
        if tenant is None:
            return Resolution(DEFAULT_CLASS, "no tenant on the holder")
        return await class_of(self.resolver, tenant, self.run_blocking)

    async def _parties(self, bridge: Bridge) -> list[Party]:
        """The real parties of ``bridge`` (announcers, recorders, snoops left out) with tenants."""
        members = [await self._channel(cid) for cid in bridge.channel_ids]
        return [Party(c.id, await self._tenant_of(c)) for c in members if not c.is_helper]

    # -- actions, carried out over ARI -------------------------------------------------------
    async def _set_class(self, channel_id: str, moh_class: str) -> None:
        if channel_id in self._outside or self.state.preset.get(channel_id) == moh_class:
            return
        try:
            await self.ari.set_variable(channel_id, MUSIC_CLASS, moh_class)
        except AriRequestFailed as exc:
            if exc.status != 409:
                raise
            # a dialplan bridge seen through subscribeAll: its class is the dialplan's to set
            # (the FastAGI route, docs/holds.md); nothing here can change what it hears
            self._outside.add(channel_id)
            log.info("channel %s is outside Stasis: its class is the dialplan's (docs/holds.md)", printable(channel_id))
            return
        self.state.preset[channel_id] = moh_class

    async def _start_music(self, channel_id: str, hold: ActiveHold) -> None:
        await self._set_class(channel_id, hold.moh_class)  # CHANNEL(musicclass) beats mohClass
        if channel_id in self._outside:  # found out just now: Asterisk plays the dialplan's class
            return
        await self.ari.start_moh(channel_id, hold.moh_class)
        hold.listeners.add(channel_id)
        if hold.ended:  # the hold ended while this music was starting (a joiner as the holder left)
            await self._stop_music((channel_id,), "hold ended while it started")

    async def _carry_out(
        self, plan: HoldPlan, hold: ActiveHold, mark: bool = False, since: datetime | None = None
    ) -> float:
        """Start the plan's music; returns the ms from ``since`` to the music started (0 when
        the plan starts none). With ``mark``, the hold is marked on the holder at the same time,
        not after: a handler killed right after starting music leaves a hold its successor's
        resync finds (and stops, if the unhold was missed meanwhile), at no cost in time to the
        music."""

        async def music() -> float:
            for channel_id in plan.start_on:
                await self._start_music(channel_id, hold)
            return ms_since(since) if plan.start_on else 0.0

        if mark:
            _, delay = await asyncio.gather(self._mark(hold), music())
        else:
            delay = await music()
        hold.listeners.update(plan.listeners)
        return delay

    async def _stop_music(self, channel_ids: set[str] | tuple[str, ...], why: str) -> None:
        for channel_id in channel_ids:
            try:
                await self.ari.stop_moh(channel_id)
            except AsteriskError as exc:
                log.info("stop MOH on %s (%s): %s", printable(channel_id), why, printable(exc))

    async def _mark(self, hold: ActiveHold) -> None:
        """Mark the hold on its holder (``OOMA_MOH_HOLD``), once; cleared when it ends."""
        if not hold.marked:
            hold.marked = True  # before the answer: a mark asked for is cleared at the end
            await self._remember_hold(hold.holder_id, hold.moh_class)

    async def _remember_hold(self, holder_id: str, moh_class: str) -> None:
        try:
            await self.ari.set_variable(holder_id, HOLD_VARIABLE, moh_class)
        except AsteriskError as exc:  # holder outside Stasis: resync just cannot see this hold
            log.debug("cannot mark hold on %s: %s", printable(holder_id), printable(exc))

    # -- membership --------------------------------------------------------------------------
    async def _preset(self, bridge: Bridge) -> None:
        """Each real party gets the class of the single tenant among the other parties."""
        for party_id, tenant in policy.preset_tenants(await self._parties(bridge)).items():
            await self._set_class(party_id, (await self._class_of(tenant)).moh_class)

    async def on_entered_bridge(self, event: Event) -> None:
        """Membership changed: preset classes; a newcomer to a held bridge gets the music."""
        assert event.bridge is not None and event.channel is not None
        await self._preset(event.bridge)
        joiner = event.channel
        for holder in policy.holds_reaching(joiner.id, joiner.is_helper, event.bridge.id, self.state.holds_by_bridge()):
            hold = self.state.holds[holder]
            await self._start_music(joiner.id, hold)
            self._count(HoldAction.JOINED, None, 0.0, hold, joiner)

    async def on_left_bridge(self, event: Event) -> None:
        """A holder leaving ends its hold; a held party leaving is forgotten."""
        assert event.bridge is not None and event.channel is not None
        await self._end_hold(event.channel.id, policy.LEFT)
        self.state.stop_listening(event.channel.id)

    async def on_bridge_destroyed(self, event: Event) -> None:
        """Nothing to do over ARI: :meth:`observe` forgot the bridge."""

    async def on_channel_destroyed(self, event: Event) -> None:
        """A holder hanging up ends its hold; forget the channel."""
        assert event.channel is not None
        await self._end_hold(event.channel.id, policy.HUNG_UP)
        self.state.forget_channel(event.channel.id)
        self._delivery_ms.pop(event.channel.id, None)
        self._outside.discard(event.channel.id)

    # -- hold and unhold ----------------------------------------------------------------------
    async def on_hold(self, event: Event) -> None:
        """Make sure the held party hears the holder's tenant class.

        Acts at once on the membership events have told us. A bridge's *technology* in events can
        lag (a bridge being recorded through ARI becomes ``softmix`` with no membership event), so
        unless it is known since the bridge's last change (read, or told by a recording's event:
        :mod:`.followup`), ``GET /bridges/{id}`` runs alongside, the fresh bridge is checked after
        the music started, and what it adds is carried out then (:func:`.followup.correct`). Music
        started on a bridge that turns out to forward is harmless: the same class, stopped by us
        on unhold. The hold's mark goes with music we start; a hold whose music is Asterisk's is
        marked once the burst of holds quiets (:mod:`.followup`)."""
        holder = event.channel
        assert holder is not None
        known = self.state.bridge_of(holder.id)
        if known is None:
            return
        others = {c for c in known.channel_ids if c != holder.id}
        if others and others <= self._outside:
            return outside.hold_outside_stasis(self, holder, known, sorted(others))
        read = known.id not in self.state.known_technology  # else no read (.followup rule 3)
        fresh_bridge = asyncio.ensure_future(self.ari.get_bridge(known.id)) if read else None
        try:
            tenant = await self._tenant_of(holder)
            moh_class, reason = await self._class_of(tenant)
            hold = ActiveHold(holder.id, known.id, moh_class)
            self.state.holds[holder.id] = hold
            plan = await self._plan_hold(known, holder.id, moh_class)
            delay = await self._carry_out(plan, hold, mark=bool(plan.start_on), since=event.timestamp)
            if plan.start_on and set(plan.start_on) <= self._outside:  # learnt while starting it
                self.state.holds.pop(holder.id, None)
                return outside.hold_outside_stasis(self, holder, known, plan.start_on)
            fresh = Bridge.from_json(await fresh_bridge) if fresh_bridge is not None else None
        finally:
            if fresh_bridge is not None and not fresh_bridge.done():
                fresh_bridge.cancel()
        if fresh is not None:
            plan, delay = await correct(self, known, fresh, plan, hold, delay, event.timestamp)
        if plan.action.hears_music:  # a dialplan bridge's hold (returned above) is looked up later
            self.tally.classify(holder.id, tenant, fallback=is_fallback(moh_class, moh_class, reason))
        else:
            self.tally.discard(holder.id)
        self._count(plan.action, reason, delay, hold, holder)
        if not hold.marked:
            self.followups.put_off(known.id, lambda: mark_later(self, hold), "hold mark")

    async def _plan_hold(self, bridge: Bridge, holder_id: str, moh_class: str) -> HoldPlan:
        others = [p.id for p in await self._parties(bridge) if p.id != holder_id]
        held_class = None
        if len(others) == 1 and bridge.forwards_hold:
            held_class = self.state.preset.get(others[0]) or await self.ari.get_variable(others[0], MUSIC_CLASS)
        return policy.plan_hold(others, bridge.forwards_hold, held_class, moh_class)

    async def on_unhold(self, event: Event) -> None:
        """Stop the music we started; Asterisk stops the forwarded one itself."""
        assert event.channel is not None
        await self._end_hold(event.channel.id, policy.UNHOLD)

    async def _end_hold(self, holder_id: str, why: str) -> None:
        """Stop the music of a hold's listeners. Asterisk stops a forwarded hold's music on a
        forwarded unhold, but not when the holder hangs up or leaves: then only we do."""
        hold = self.state.holds.pop(holder_id, None)
        if hold is None:
            return
        hold.ended = True
        stopped: set[str] = set()
        while pending := hold.listeners - stopped:  # a joiner's music may start meanwhile
            stopped |= pending
            await self._stop_music(tuple(pending), why)
        if hold.marked and policy.clears_hold_mark(why):  # a hold that ended before its follow-up has none
            await self._remember_hold(holder_id, "")
        log.info("hold ended holder=%s reason=%s music stopped on %d", logfmt(holder_id), why, len(hold.listeners))

    def _count(self, action: HoldAction, reason: str | None, delay_ms: float, hold: ActiveHold, who: Channel) -> None:
        self.stats.actions[action.value] += 1
        if action.plays_music:
            self.stats.to_music_ms.append(delay_ms)
        if reason:
            self.stats.fallbacks[reason] += 1
            metrics.fallback("ari", reason)
        metrics.hold(action.value, action.hears_music, hold.moh_class, delay_ms / 1000 if action.plays_music else None)
        delivery = self._delivery_ms.pop(hold.holder_id, None)
        log.info(
            "hold action=%s holder=%s tenant=%s class=%s to_music_ms=%.1f%s%s channel_id=%s bridge=%s",
            action.value,
            logfmt(who.name),
            logfmt(self.state.tenants.get(hold.holder_id)),
            logfmt(hold.moh_class),
            delay_ms,
            f" delivered_after_ms={delivery:.1f}" if delivery is not None else "",
            f" fallback={logfmt(reason)}" if reason else "",
            logfmt(who.id),
            logfmt(hold.bridge_id),
        )

    # -- after (re)connection -----------------------------------------------------------------
    async def resync(self) -> None:
        """Rebuild state after a (re)connection: :func:`.resync.resync`."""
        await resync(self)
