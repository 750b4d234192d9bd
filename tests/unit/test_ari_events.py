"""ARI event JSON -> typed values."""

from __future__ import annotations

from datetime import UTC, datetime

from ooma_moh.ari.events import Bridge, Channel, Event, parse_timestamp
from ooma_moh.ari.state import HoldStats
from ooma_moh.resolve import tenant_of_call


def hint(c: Channel) -> str | None:
    """The channel's tenant from what its event carries (the handler's first look)."""
    return tenant_of_call(variable=c.variables.get("OOMA_MOH_TENANT"), accountcode=c.accountcode)[0]


def test_channel_tenant_and_helpers() -> None:
    c = Channel.from_json(
        {
            "id": "1.1",
            "name": "PJSIP/acme-100-00000001",
            "accountcode": "acme",
            "channelvars": {"OOMA_MOH_TENANT": "", "OOMA_MOH_HOLD": ""},
        }
    )
    assert hint(c) == "acme" and c.holding_class is None and not c.is_helper
    v = Channel.from_json(
        {
            "id": "1.2",
            "name": "Local/x@y-0001;1",
            "channelvars": {"OOMA_MOH_TENANT": "beta", "OOMA_MOH_HOLD": "tenant-beta"},
        }
    )
    assert hint(v) == "beta" and v.holding_class == "tenant-beta"
    for name in ("Announcer/ARI-0001", "Recorder/ARI-0002", "Snoop/1.1-0003", "UnicastRTP/127.0.0.1:5000-0004"):
        assert Channel.from_json({"id": "x", "name": name}).is_helper
    assert hint(Channel.from_json({"id": "x", "name": "PJSIP/a", "accountcode": None})) is None


def test_the_tenant_of_a_call_in_order_of_preference() -> None:
    everything = {"argument": "a", "variable": "v", "accountcode": "c", "endpoint_tenant": "e"}
    assert tenant_of_call(**everything) == ("a", "argument")
    assert tenant_of_call(**{**everything, "argument": ""}) == ("v", "variable")
    assert tenant_of_call(variable=None, accountcode="c", endpoint_tenant="e") == ("c", "accountcode")
    assert tenant_of_call(accountcode="unknown", endpoint_tenant="e") == ("e", "endpoint")  # AGI's "none"
    assert tenant_of_call() == (None, "none")


def test_bridge_forwarding() -> None:
    assert Bridge.from_json({"id": "b", "technology": "simple_bridge", "channels": ["1", "2"]}).forwards_hold
    assert Bridge.from_json({"id": "b", "technology": "native_rtp", "channels": ["1", "2"]}).forwards_hold
    assert not Bridge.from_json({"id": "b", "technology": "simple_bridge", "channels": ["1"]}).forwards_hold
    soft = Bridge.from_json({"id": "b", "technology": "softmix", "channels": ["1", "2", "3"]})
    assert not soft.forwards_hold and soft.channel_ids == ("1", "2", "3")


def test_event_and_timestamp() -> None:
    e = Event.from_json(
        {
            "type": "ChannelHold",
            "timestamp": "2026-11-26T06:31:02.123+0000",
            "channel": {"id": "1.1", "name": "PJSIP/a"},
            "musicclass": "default",
        }
    )
    assert e.channel is not None
    assert e.type == "ChannelHold" and e.channel.id == "1.1" and e.bridge is None
    assert e.timestamp == datetime(2026, 11, 26, 6, 31, 2, 123000, tzinfo=UTC)
    assert parse_timestamp("garbage") is None and parse_timestamp(None) is None


def test_stats_summary() -> None:
    stats = HoldStats()
    assert "holds: {}" in stats.summary()
    stats.actions["started"] += 2
    stats.to_music_ms += [2.0, 4.0]
    assert "p50=" in stats.summary() and "started" in stats.summary()
