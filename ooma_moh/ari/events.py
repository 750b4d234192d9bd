"""ARI event JSON -> small typed values. Pure: no I/O.

Only what the hold handler needs is kept. Channel variables arrive in ``channelvars`` when
ari.conf lists them (``channelvars = OOMA_MOH_TENANT,OOMA_MOH_HOLD``; ooma_moh/asterisk_conf/ari.conf does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..model import HOLD_VARIABLE

#: Channels Asterisk or an ARI application adds to a bridge that are not people: playback and MOH
#: announcers, bridge recorders, snoops, external media.
HELPER_PREFIXES = ("Announcer/", "Recorder/", "Snoop/", "UnicastRTP/", "AudioSocket/", "WebSocket/", "Multicast/")
#: Bridge technologies that forward a hold to the other party (2-party bridges).
FORWARDING_TECHNOLOGIES = ("simple_bridge", "native_rtp")
#: Events about a recording or a playback, which name their target (``bridge:<id>``): a bridge's
#: recorder or announcer is an internal channel no membership event shows (measured, issue 24)
MEDIA_EVENTS = frozenset({"RecordingStarted", "RecordingFinished", "RecordingFailed", "PlaybackStarted"})


@dataclass(frozen=True)
class Channel:
    """A channel as an event or ``GET /channels`` shows it."""

    id: str
    name: str
    accountcode: str = ""
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Channel:
        """Build from ARI's channel JSON."""
        return cls(
            data["id"], data.get("name", ""), data.get("accountcode", "") or "", dict(data.get("channelvars") or {})
        )

    @property
    def is_helper(self) -> bool:
        """An announcer, recorder, snoop or media channel rather than a party to the call."""
        return self.name.startswith(HELPER_PREFIXES)

    @property
    def holding_class(self) -> str | None:
        """The class recorded on this channel while it holds (set by the handler)."""
        return self.variables.get(HOLD_VARIABLE) or None


@dataclass(frozen=True)
class Bridge:
    """A bridge: its technology and member channel ids."""

    id: str
    technology: str = ""
    bridge_type: str = "mixing"
    channel_ids: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bridge:
        """Build from ARI's bridge JSON."""
        return cls(
            data["id"], data.get("technology", ""), data.get("bridge_type", "mixing"), tuple(data.get("channels") or ())
        )

    @property
    def forwards_hold(self) -> bool:
        """Whether Asterisk itself passes a hold to the other party: exactly two channels, in a
        2-party technology (a softmix bridge, or any helper channel, stops forwarding)."""
        return self.technology in FORWARDING_TECHNOLOGIES and len(self.channel_ids) == 2


@dataclass(frozen=True)
class Event:
    """One ARI event: its type, the channel and bridge it concerns, and when it happened."""

    type: str
    channel: Channel | None = None
    bridge: Bridge | None = None
    timestamp: datetime | None = None
    #: the bridge a recording or playback event (:data:`MEDIA_EVENTS`) is about, if any
    target_bridge: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        """Build from an event as received on the WebSocket."""
        channel = Channel.from_json(data["channel"]) if isinstance(data.get("channel"), dict) else None
        bridge = Bridge.from_json(data["bridge"]) if isinstance(data.get("bridge"), dict) else None
        kind = data.get("type", "")
        target = None
        if kind in MEDIA_EVENTS:
            media = data.get("recording") or data.get("playback")
            uri = media.get("target_uri") if isinstance(media, dict) else None
            if isinstance(uri, str) and uri.startswith("bridge:"):
                target = uri.removeprefix("bridge:")
        return cls(kind, channel, bridge, parse_timestamp(data.get("timestamp")), target)


def parse_timestamp(value: object) -> datetime | None:
    """ARI's ``2026-11-26T06:31:02.123+0000`` as an aware datetime (None if absent/invalid)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None
