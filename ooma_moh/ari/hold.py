"""The hold handler: every held caller hears the holder's tenant music, from the first frame.

Measured on Asterisk 22 (DESIGN.md): left alone, a held party hears ``default`` (the class the
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
``GET /bridges`` (see :meth:`HoldHandler.resync`).

Feed it events with :meth:`HoldHandler.handle` (from :class:`~ooma_moh.ari.listener.EventListener`,
or from a provider's own ARI application).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..logsafe import logfmt, printable
from ..errors import AsteriskError
from ..model import DEFAULT_CLASS, endpoint_of_channel
from ..resolve import ClassResolver
from .client import AriClient
from .events import HOLD_VARIABLE, TENANT_VARIABLE, Bridge, Channel, Event

log = logging.getLogger(__name__)
MUSIC_CLASS = "CHANNEL(musicclass)"


@dataclass
class ActiveHold:
    """A hold in progress: who holds, in which bridge, which class, who hears the music (whether
    Asterisk started it by forwarding the hold, or we did)."""

    holder_id: str
    bridge_id: str
    moh_class: str
    listeners: set[str] = field(default_factory=set)


@dataclass
class HoldStats:
    """What the handler did, for logs and benchmarks."""

    actions: Counter[str] = field(default_factory=Counter)
    to_music_ms: list[float] = field(default_factory=list)
    fallbacks: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: counts per action and latency percentiles."""
        lat = self.to_music_ms
        pct = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99 if lat else []
        tail = f" p50={pct[49]:.1f}ms p99={pct[98]:.1f}ms" if pct else ""
        return f"holds: {dict(self.actions)}{tail} fallbacks: {dict(self.fallbacks)}"


class HoldHandler:
    """Keeps bridge state from ARI events and attaches the right class to held parties."""

    def __init__(self, ari: AriClient, resolver: ClassResolver,
                 run_blocking: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.ari = ari
        self.resolver = resolver
        self.run_blocking = run_blocking or asyncio.to_thread
        self.channels: dict[str, Channel] = {}
        self.bridges: dict[str, Bridge] = {}
        self.holds: dict[str, ActiveHold] = {}
        self.preset: dict[str, str] = {}
        self.stats = HoldStats()
        self._tenants: dict[str, str | None] = {}
        self._table: dict[str, Callable[[Event], Awaitable[None]]] = {
            "ChannelEnteredBridge": self.on_entered_bridge,
            "ChannelLeftBridge": self.on_left_bridge,
            "BridgeDestroyed": self.on_bridge_destroyed,
            "ChannelHold": self.on_hold,
            "ChannelUnhold": self.on_unhold,
            "ChannelDestroyed": self.on_channel_destroyed,
        }

    async def handle(self, data: dict[str, Any]) -> None:
        """Process one ARI event (JSON as received); unrelated events are ignored."""
        handler = self._table.get(data.get("type", ""))
        if handler is None:
            return
        event = Event.from_json(data)
        if event.channel is not None:
            self.channels[event.channel.id] = event.channel
        try:
            await handler(event)
        except AsteriskError as exc:  # the channel may be gone by now: log, keep going
            log.warning("%s on %s: %s", printable(event.type), printable(event.channel.name) if event.channel else "-",
                        printable(exc))

    # -- what we know -------------------------------------------------------------------------
    def bridge_of(self, channel_id: str) -> Bridge | None:
        """The bridge a channel is in, as last seen."""
        for bridge in self.bridges.values():
            if channel_id in bridge.channel_ids:
                return bridge
        return None

    async def _channel(self, channel_id: str) -> Channel:
        if channel_id not in self.channels:
            self.channels[channel_id] = Channel.from_json(await self.ari.get_channel(channel_id))
        return self.channels[channel_id]

    async def _tenant_of(self, channel: Channel) -> str | None:
        """OOMA_MOH_TENANT, else the accountcode, else the catalog's endpoint map."""
        if channel.id not in self._tenants:
            if TENANT_VARIABLE in channel.variables:  # ari.conf exports it
                tenant = channel.tenant_hint
            else:
                tenant = await self.ari.get_variable(channel.id, TENANT_VARIABLE) or channel.accountcode or None
            endpoint = endpoint_of_channel(channel.name)
            if tenant is None and endpoint is not None and not channel.is_helper:
                tenant = await self.run_blocking(self.resolver.tenant_of_endpoint, endpoint)
            self._tenants[channel.id] = tenant
        return self._tenants[channel.id]

    async def _class_of(self, tenant: str | None) -> tuple[str, str | None]:
        if tenant is None:
            return DEFAULT_CLASS, "no tenant on the holder"
        return self.resolver.cached(tenant) or await self.run_blocking(self.resolver.resolve, tenant)

    async def _parties(self, bridge: Bridge) -> list[Channel]:
        members = [await self._channel(cid) for cid in bridge.channel_ids]
        return [c for c in members if not c.is_helper]

    async def _others(self, bridge: Bridge, holder_id: str) -> list[Channel]:
        """The real parties of ``bridge`` other than the holder."""
        return [p for p in await self._parties(bridge) if p.id != holder_id]

    async def _set_class(self, channel_id: str, moh_class: str) -> None:
        if self.preset.get(channel_id) != moh_class:
            await self.ari.set_variable(channel_id, MUSIC_CLASS, moh_class)
            self.preset[channel_id] = moh_class

    # -- preset -------------------------------------------------------------------------------
    async def _preset(self, bridge: Bridge) -> None:
        """Each real party gets the class of the single tenant among the other parties."""
        parties = await self._parties(bridge)
        for party in parties:
            tenants = {await self._tenant_of(o) for o in parties if o.id != party.id} - {None}
            if len(tenants) == 1:
                moh_class, _ = await self._class_of(tenants.pop())
                await self._set_class(party.id, moh_class)

    async def on_entered_bridge(self, event: Event) -> None:
        """Membership changed: preset classes; a newcomer to a held bridge gets the music."""
        assert event.bridge is not None and event.channel is not None
        self.bridges[event.bridge.id] = event.bridge
        await self._preset(event.bridge)
        for hold in self.holds.values():
            if hold.bridge_id == event.bridge.id and event.channel.id != hold.holder_id \
                    and not event.channel.is_helper:
                await self._start_music(event.channel.id, hold)
                self._count("joined-during-hold", None, 0.0, hold, event.channel)

    async def on_left_bridge(self, event: Event) -> None:
        """A holder leaving ends its hold; a held party leaving is forgotten."""
        assert event.bridge is not None and event.channel is not None
        self.bridges[event.bridge.id] = event.bridge
        await self._end_hold(event.channel.id, "holder left the bridge")
        for hold in self.holds.values():
            hold.listeners.discard(event.channel.id)

    async def on_bridge_destroyed(self, event: Event) -> None:
        """Forget the bridge."""
        assert event.bridge is not None
        self.bridges.pop(event.bridge.id, None)

    async def on_channel_destroyed(self, event: Event) -> None:
        """A holder hanging up ends its hold; forget the channel."""
        assert event.channel is not None
        cid = event.channel.id
        await self._end_hold(cid, "holder hung up")
        for hold in self.holds.values():
            hold.listeners.discard(cid)
        for store in (self.channels, self.preset, self._tenants):
            store.pop(cid, None)

    # -- hold and unhold ----------------------------------------------------------------------
    async def on_hold(self, event: Event) -> None:
        """Make sure the held party hears the holder's tenant class."""
        holder = event.channel
        assert holder is not None
        known = self.bridge_of(holder.id)
        if known is None:
            return
        bridge = Bridge.from_json(await self.ari.get_bridge(known.id))  # fresh technology and members
        self.bridges[bridge.id] = bridge
        moh_class, reason = await self._class_of(await self._tenant_of(holder))
        hold = ActiveHold(holder.id, bridge.id, moh_class)
        self.holds[holder.id] = hold
        await self._remember_hold(holder.id, moh_class)
        others = await self._others(bridge, holder.id)
        if not others:
            action = "alone"
        elif len(others) > 1:
            action = "conference"  # 2+ people still talking: no music into the conference
        elif bridge.forwards_hold:
            held = others[0]
            current = self.preset.get(held.id) or await self.ari.get_variable(held.id, MUSIC_CLASS)
            if current == moh_class:
                action = "forwarded"  # Asterisk started MOH at the hold, with this class
                hold.listeners.add(held.id)
            else:
                await self._start_music(held.id, hold)
                action = "corrected"
        else:
            await self._start_music(others[0].id, hold)
            action = "started"
        delay = 0.0 if action == "forwarded" else _ms_since(event.timestamp)
        self._count(action, reason, delay, hold, holder)

    async def on_unhold(self, event: Event) -> None:
        """Stop the music we started; Asterisk stops the forwarded one itself."""
        assert event.channel is not None
        await self._end_hold(event.channel.id, "unhold")

    async def _start_music(self, channel_id: str, hold: ActiveHold) -> None:
        await self._set_class(channel_id, hold.moh_class)  # CHANNEL(musicclass) beats mohClass
        await self.ari.start_moh(channel_id, hold.moh_class)
        hold.listeners.add(channel_id)

    async def _end_hold(self, holder_id: str, why: str) -> None:
        """Stop the music of a hold's listeners. Asterisk stops a forwarded hold's music on a
        forwarded unhold, but not when the holder hangs up or leaves: then only we do."""
        hold = self.holds.pop(holder_id, None)
        if hold is None:
            return
        for channel_id in hold.listeners:
            try:
                await self.ari.stop_moh(channel_id)
            except AsteriskError as exc:
                log.info("stop MOH on %s (%s): %s", printable(channel_id), why, printable(exc))
        if why != "holder hung up":
            await self._remember_hold(holder_id, "")
        log.info("hold ended holder=%s reason=%s music stopped on %d", logfmt(holder_id), why, len(hold.listeners))

    async def _remember_hold(self, holder_id: str, moh_class: str) -> None:
        try:
            await self.ari.set_variable(holder_id, HOLD_VARIABLE, moh_class)
        except AsteriskError as exc:  # holder outside Stasis: resync just cannot see this hold
            log.debug("cannot mark hold on %s: %s", printable(holder_id), printable(exc))

    def _count(self, action: str, reason: str | None, delay_ms: float, hold: ActiveHold, who: Channel) -> None:
        self.stats.actions[action] += 1
        if action in ("forwarded", "corrected", "started"):
            self.stats.to_music_ms.append(delay_ms)
        if reason:
            self.stats.fallbacks[reason] += 1
        log.info("hold action=%s holder=%s tenant=%s class=%s to_music_ms=%.1f%s", action, logfmt(who.name),
                 logfmt(self._tenants.get(hold.holder_id)), logfmt(hold.moh_class), delay_ms,
                 f" fallback={logfmt(reason)}" if reason else "")

    # -- after (re)connection -----------------------------------------------------------------
    async def resync(self) -> None:
        """Rebuild state from ``GET /channels`` and ``GET /bridges``; re-attach holds in progress."""
        channels = {c.id: c for c in map(Channel.from_json, await self.ari.list_channels())}
        bridges = {b.id: b for b in map(Bridge.from_json, await self.ari.list_bridges())}
        self.channels, self.bridges = channels, bridges
        self._tenants = {k: v for k, v in self._tenants.items() if k in channels}
        self.preset = {k: v for k, v in self.preset.items() if k in channels}
        previous, self.holds = self.holds, {}
        for bridge in bridges.values():
            await self._preset(bridge)
            for cid in bridge.channel_ids:
                channel = channels.get(cid)
                if channel is None:
                    continue
                moh_class = channel.holding_class
                if moh_class is None and HOLD_VARIABLE not in channel.variables:
                    moh_class = await self.ari.get_variable(cid, HOLD_VARIABLE) or None
                if moh_class:
                    if await self._still_held(cid) is False:
                        await self._missed_unhold(channel, bridge)
                    else:
                        await self._reattach(channel, bridge, moh_class, previous.get(cid))
        log.info("resynced: %d channels, %d bridges, %d holds in progress", len(channels), len(bridges),
                 len(self.holds))

    async def _still_held(self, channel_id: str) -> bool | None:
        """Whether the holder's phone still holds: ``CHANNEL(rtp,hold)`` (PJSIP channels; None
        where Asterisk cannot say)."""
        try:
            value = await self.ari.get_variable(channel_id, "CHANNEL(rtp,hold)")
        except AsteriskError:
            return None
        return None if value is None else value.strip() == "1"

    async def _missed_unhold(self, holder: Channel, bridge: Bridge) -> None:
        """The holder unheld while we were away: stop the music we may have started (Asterisk
        stopped a forwarded hold's music itself) and clear the mark."""
        if not bridge.forwards_hold:
            for party in await self._others(bridge, holder.id):
                try:
                    await self.ari.stop_moh(party.id)
                except AsteriskError as exc:
                    log.info("stop MOH on %s (missed unhold): %s", printable(party.id), printable(exc))
        await self._remember_hold(holder.id, "")
        self.stats.actions["missed-unhold"] += 1
        log.info("hold ended while disconnected holder=%s: music stopped", logfmt(holder.name))

    async def _reattach(self, holder: Channel, bridge: Bridge, moh_class: str, known: ActiveHold | None) -> None:
        hold = ActiveHold(holder.id, bridge.id, moh_class, set(known.listeners) if known else set())
        self.holds[holder.id] = hold
        others = await self._others(bridge, holder.id)
        if len(others) == 1:
            if bridge.forwards_hold:
                hold.listeners.add(others[0].id)  # Asterisk plays the forwarded hold's music
            elif others[0].id not in hold.listeners:
                await self._start_music(others[0].id, hold)
        self._count("resynced", None, 0.0, hold, holder)


def _ms_since(timestamp: datetime | None) -> float:
    if timestamp is None:
        return 0.0
    return max(0.0, (datetime.now(timezone.utc) - timestamp).total_seconds() * 1000)
