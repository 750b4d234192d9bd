"""What the hold handler knows of Asterisk: channels, bridges, holds in progress, the classes it
has set. Plain data, updated from events; no I/O."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .events import Bridge, Channel


@dataclass
class ActiveHold:
    """A hold in progress: who holds, in which bridge, which class, who hears the music (whether
    Asterisk started it by forwarding the hold, or we did)."""

    holder_id: str
    bridge_id: str
    moh_class: str
    listeners: set[str] = field(default_factory=set)
    #: the hold is over (unhold, hang-up): music a joiner was being given meanwhile must stop
    ended: bool = False
    #: ``OOMA_MOH_HOLD`` was asked for on the holder (so it is cleared when the hold ends)
    marked: bool = False


@dataclass
class CallState:
    """Channels and bridges as last seen, holds in progress, and per channel the class we set on
    it (``preset``) and its tenant (``tenants``, None when it has none)."""

    channels: dict[str, Channel] = field(default_factory=dict)
    bridges: dict[str, Bridge] = field(default_factory=dict)
    holds: dict[str, ActiveHold] = field(default_factory=dict)
    preset: dict[str, str] = field(default_factory=dict)
    tenants: dict[str, str | None] = field(default_factory=dict)
    #: channel -> bridge it is in, kept with ``bridges`` (every event asks; a scan was O(bridges))
    member_of: dict[str, str] = field(default_factory=dict)
    #: bridges whose technology is Asterisk's, not an event's: read (``GET /bridges/{id}``) or
    #: told by a recording's event, and not replaced by an event about the bridge since
    known_technology: set[str] = field(default_factory=set)

    def put_read(self, bridge: Bridge) -> None:
        """Record a bridge whose technology is Asterisk's own (:attr:`known_technology`)."""
        self.put_bridge(bridge)
        self.known_technology.add(bridge.id)

    def put_bridge(self, bridge: Bridge) -> None:
        """Record a bridge as an event or a listing shows it (members replace the old ones)."""
        self.known_technology.discard(bridge.id)
        old = self.bridges.get(bridge.id)
        for cid in old.channel_ids if old else ():
            if self.member_of.get(cid) == bridge.id:
                del self.member_of[cid]
        self.bridges[bridge.id] = bridge
        for cid in bridge.channel_ids:
            self.member_of[cid] = bridge.id

    def drop_bridge(self, bridge_id: str) -> None:
        """A bridge is gone."""
        self.known_technology.discard(bridge_id)
        old = self.bridges.pop(bridge_id, None)
        for cid in old.channel_ids if old else ():
            if self.member_of.get(cid) == bridge_id:
                del self.member_of[cid]

    def bridge_of(self, channel_id: str) -> Bridge | None:
        """The bridge a channel is in, as last seen."""
        bridge_id = self.member_of.get(channel_id)
        return self.bridges.get(bridge_id) if bridge_id is not None else None

    def holds_by_bridge(self) -> dict[str, str]:
        """holder -> bridge of every hold in progress."""
        return {holder: hold.bridge_id for holder, hold in self.holds.items()}

    def stop_listening(self, channel_id: str) -> None:
        """A channel left or hung up: it hears no hold any more."""
        for hold in self.holds.values():
            hold.listeners.discard(channel_id)

    def forget_channel(self, channel_id: str) -> None:
        """A channel is gone."""
        self.stop_listening(channel_id)
        for store in (self.channels, self.preset, self.tenants):
            store.pop(channel_id, None)

    def replace(self, channels: dict[str, Channel], bridges: dict[str, Bridge]) -> dict[str, ActiveHold]:
        """Start over from a fresh listing (after a reconnection); returns the holds known before,
        which the caller re-attaches or ends. What we knew of vanished channels is dropped."""
        self.channels, self.bridges, self.member_of, self.known_technology = channels, {}, {}, set()
        for bridge in bridges.values():
            self.put_bridge(bridge)
        self.tenants = {k: v for k, v in self.tenants.items() if k in channels}
        self.preset = {k: v for k, v in self.preset.items() if k in channels}
        previous, self.holds = self.holds, {}
        return previous


@dataclass
class HoldStats:
    """What the handler did, for logs, tests and benchmarks."""

    actions: Counter[str] = field(default_factory=Counter)
    to_music_ms: list[float] = field(default_factory=list)
    fallbacks: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: counts per action and latency percentiles."""
        lat = self.to_music_ms
        pct = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99 if lat else []
        tail = f" p50={pct[49]:.1f}ms p99={pct[98]:.1f}ms" if pct else ""
        return f"holds: {dict(self.actions)}{tail} fallbacks: {dict(self.fallbacks)}"


def ms_since(timestamp: datetime | None) -> float:
    """Milliseconds since ``timestamp`` (0 if unknown or in the future)."""
    if timestamp is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - timestamp).total_seconds() * 1000)
