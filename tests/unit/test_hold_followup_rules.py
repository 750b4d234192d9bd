"""The rules of ooma_moh/ari/followup.py, in its order, on the fake ARI: the mark of a hold whose
music is Asterisk's put off until holds quiet down, and the fresh bridge's correction."""

from __future__ import annotations

import asyncio
import time

from ooma_moh.ari.followup import FollowUps
from ooma_moh.ari.hold import HoldHandler
from tests.unit.fake_ari import FakeAri, inline, resolver
from tests.unit.test_hold_rules import GatedAri


def scene(quiet_s: float = 0.05, max_wait_s: float = 0.5) -> tuple[FakeAri, HoldHandler]:
    ari = FakeAri()
    handler = HoldHandler(ari, resolver({"acme"}), run_blocking=inline)
    handler.followups = FollowUps(handler.dispatcher, quiet_s, max_wait_s)
    return ari, handler


def call(ari: FakeAri, n: int, technology: str = "simple_bridge") -> None:
    ari.channel(f"user{n}", f"PJSIP/acme-100-0000000{n}", tenant="acme")
    ari.channel(f"caller{n}", f"PJSIP/trunk-0000010{n}")
    ari.bridge(f"b{n}", [f"user{n}", f"caller{n}"], technology)


async def bridged(ari: FakeAri, handler: HoldHandler, n: int) -> None:
    for cid in (f"user{n}", f"caller{n}"):
        await handler.handle(ari.event("ChannelEnteredBridge", cid, f"b{n}"))


async def settle(handler: HoldHandler) -> None:
    """Until the dispatcher has run what was submitted (not the put-off follow-ups)."""
    await handler.dispatcher.drain()


def test_a_forwarded_hold_is_marked_when_holds_quiet_not_on_its_path() -> None:
    async def scenario() -> None:
        ari, handler = scene()
        call(ari, 1)
        await bridged(ari, handler, 1)
        ari.actions.clear()
        requests = ari.requests
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        assert ari.requests == requests + 1 and ari.actions == []  # only GET /bridges/b1: Asterisk plays the preset
        assert handler.stats.actions == {"forwarded": 1} and handler.followups.waiting == 1
        await asyncio.sleep(0.15)
        await settle(handler)
        assert ari.actions == [("mark", "user1", "tenant-acme")] and handler.holds["user1"].marked

    asyncio.run(scenario())


def test_music_we_start_is_marked_in_the_same_moment_not_later() -> None:
    async def scenario() -> None:
        ari, handler = scene()
        call(ari, 1, "softmix")
        await bridged(ari, handler, 1)
        ari.actions.clear()
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        assert sorted(ari.actions) == [("mark", "user1", "tenant-acme"), ("moh", "caller1", "tenant-acme")]
        await handler.followups.flush()
        assert ari.actions.count(("mark", "user1", "tenant-acme")) == 1  # the follow-up only checks the bridge

    asyncio.run(scenario())


def test_the_follow_up_waits_while_holds_keep_coming_but_never_longer_than_max_wait() -> None:
    async def scenario() -> float:
        ari, handler = scene(quiet_s=0.1, max_wait_s=0.3)
        for n in range(1, 4):
            call(ari, n)
            await bridged(ari, handler, n)
        ari.actions.clear()
        start = time.monotonic()
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        while ("mark", "user1", "tenant-acme") not in ari.actions:
            handler.followups.hold_seen()  # a hold every 20 ms: never quiet
            await asyncio.sleep(0.02)
        return time.monotonic() - start

    waited = asyncio.run(scenario())
    assert 0.25 <= waited < 2.0, waited  # due at 0.3 s; the bound only says it came (a busy machine is late)


def test_a_hold_over_before_its_follow_up_sets_no_mark_and_clears_none() -> None:
    async def scenario() -> None:
        ari, handler = scene()
        call(ari, 1)
        await bridged(ari, handler, 1)
        ari.actions.clear()
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await handler.dispatch(ari.event("ChannelUnhold", "user1"))
        await settle(handler)
        await handler.followups.flush()
        assert ("mark", "user1", "tenant-acme") not in ari.actions and ("mark", "user1", "") not in ari.actions
        assert "user1" not in handler.holds

    asyncio.run(scenario())


def test_an_unhold_after_the_follow_up_clears_the_mark() -> None:
    async def scenario() -> None:
        ari, handler = scene()
        call(ari, 1)
        await bridged(ari, handler, 1)
        ari.actions.clear()
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await handler.followups.flush()
        await handler.dispatch(ari.event("ChannelUnhold", "user1"))
        await settle(handler)
        assert ari.actions[0] == ("mark", "user1", "tenant-acme") and ari.actions[-1] == ("mark", "user1", "")

    asyncio.run(scenario())


def test_a_resync_writes_the_put_off_marks_first_and_finds_the_hold() -> None:
    async def scenario() -> None:
        ari, handler = scene(quiet_s=10, max_wait_s=10)
        call(ari, 1)
        await bridged(ari, handler, 1)
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        assert handler.followups.waiting == 1
        ari.variables[("user1", "CHANNEL(rtp,hold)")] = "1"
        await handler.resync()
        assert ari.variables[("user1", "OOMA_MOH_HOLD")] == "tenant-acme"
        assert handler.holds["user1"].marked and handler.stats.actions["resynced"] == 1

    asyncio.run(scenario())


def test_a_holder_gone_before_its_mark_is_no_error() -> None:
    async def scenario() -> None:
        ari, handler = scene()
        call(ari, 1)
        await bridged(ari, handler, 1)
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        del ari.channels["user1"]  # hung up, its ChannelDestroyed not yet handled
        await handler.followups.flush()  # the mark fails: logged at DEBUG, nothing raised

    asyncio.run(scenario())


def test_a_recorded_bridge_found_by_the_check_is_remembered_for_the_next_hold() -> None:
    """Events said a 2-party simple bridge; the fresh bridge says softmix (recorded through ARI,
    no event): music and mark after the check, and the next hold there starts its music at once."""

    async def scenario() -> None:
        ari, handler = scene()
        call(ari, 1)
        await bridged(ari, handler, 1)
        ari.bridge("b1", ["user1", "caller1"], "softmix")
        ari.actions.clear()
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        assert sorted(ari.actions) == [("mark", "user1", "tenant-acme"), ("moh", "caller1", "tenant-acme")]
        assert handler.stats.actions == {"started": 1} and handler.followups.waiting == 0
        assert not handler.state.bridges["b1"].forwards_hold  # learnt
        await handler.dispatch(ari.event("ChannelUnhold", "user1"))
        await settle(handler)
        assert handler.holds == {}

    asyncio.run(scenario())


def test_a_bridge_recorded_as_it_is_bridged_is_known_before_the_hold() -> None:
    """The recorder is not in events: read 0.5 s (here 0.05 s) after the membership settled, the
    bridge says softmix, and the hold's music starts before its own GET /bridges answers."""

    async def scenario() -> None:
        ari = GatedAri({"b1"})
        handler = HoldHandler(ari, resolver({"acme"}), run_blocking=inline)
        handler.followups.settle_s = 0.05
        call(ari, 1)
        await bridged(ari, handler, 1)
        ari.bridge("b1", ["user1", "caller1"], "softmix")  # recording started, no event
        ari.gate.set()
        await asyncio.sleep(0.15)
        await settle(handler)
        assert not handler.state.bridges["b1"].forwards_hold
        ari.gate.clear()
        ari.actions.clear()
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        for _ in range(50):
            await asyncio.sleep(0)
        assert ("moh", "caller1", "tenant-acme") in ari.actions  # without a GET /bridges/b1 (rule 3)
        ari.gate.set()
        await settle(handler)
        assert handler.stats.actions == {"started": 1}

    asyncio.run(scenario())


def test_an_event_that_came_while_the_bridge_was_read_wins_over_the_answer() -> None:
    async def scenario() -> None:
        ari = GatedAri({"b1"})
        handler = HoldHandler(ari, resolver({"acme"}), run_blocking=inline)
        handler.followups.settle_s = 0.01
        call(ari, 1)
        await bridged(ari, handler, 1)
        ari.bridge("b1", ["user1", "caller1"], "softmix")
        await asyncio.sleep(0.05)  # the read is sent, its answer held back
        newer = ari.event("ChannelEnteredBridge", "caller1", "b1")  # an event about b1, newer than the read
        newer["bridge"] = {**newer["bridge"], "technology": "native_rtp"}
        handler.followups.settle_s = 10  # (the event asks for another read: not within this test)
        await handler.dispatch(newer)
        ari.gate.set()
        await settle(handler)
        assert handler.state.bridges["b1"].technology == "native_rtp"  # not the read's softmix

    asyncio.run(scenario())


def test_no_bridge_is_read_once_settling_stopped() -> None:
    async def scenario() -> None:
        ari, handler = scene()
        handler.followups.settle_s = 0.02
        call(ari, 1)
        await bridged(ari, handler, 1)
        handler.followups.stop_settling()  # shutdown
        requests = ari.requests
        await asyncio.sleep(0.1)
        await settle(handler)
        assert ari.requests == requests

    asyncio.run(scenario())


def recording(kind: str, bridge: str) -> dict[str, object]:
    return {"type": kind, "recording": {"name": "r", "state": "recording", "target_uri": f"bridge:{bridge}"}}


async def read_once_settled(ari: FakeAri, handler: HoldHandler) -> None:
    handler.followups.settle_s = 0.01
    call(ari, 1)
    await bridged(ari, handler, 1)
    await asyncio.sleep(0.05)
    await settle(handler)
    assert "b1" in handler.state.known_technology


def test_a_hold_in_a_bridge_read_since_its_last_change_sends_no_read() -> None:
    """Rules 1 and 3: the settled read told the technology; the hold's path sends nothing (the
    music is Asterisk's, the mark is put off)."""

    async def scenario() -> None:
        ari, handler = scene()
        await read_once_settled(ari, handler)
        requests = ari.requests
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        assert ari.requests == requests and handler.stats.actions == {"forwarded": 1}
        await handler.dispatch(ari.event("ChannelEnteredBridge", "caller1", "b1"))  # an event about b1
        assert "b1" not in handler.state.known_technology  # its technology is the event's again

    asyncio.run(scenario())


def test_a_recording_started_on_a_bridge_makes_its_next_hold_start_music_at_once() -> None:
    """Rule 2: ``RecordingStarted`` (bridge:b1) says softmix without a read; the hold starts MOH
    on the held party with no GET /bridges on its path."""

    async def scenario() -> None:
        ari, handler = scene()
        await read_once_settled(ari, handler)
        ari.bridge("b1", ["user1", "caller1"], "softmix")  # what Asterisk now has
        await handler.dispatch(recording("RecordingStarted", "b1"))
        assert handler.state.bridges["b1"].technology == "softmix" and "b1" in handler.state.known_technology
        ari.actions.clear()
        requests = ari.requests
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        assert sorted(ari.actions) == [("mark", "user1", "tenant-acme"), ("moh", "caller1", "tenant-acme")]
        assert ari.requests == requests + 2  # the music and the mark: no read

    asyncio.run(scenario())


def test_a_recording_finished_makes_the_technology_unknown_until_read_again() -> None:
    """Rule 2: after ``RecordingFinished`` the last technology known (softmix) still plans a hold
    — music started where Asterisk may forward is harmless, silence is not — and the bridge is
    read again once settled: Asterisk made it a 2-party bridge again, and the next hold sends
    nothing."""

    async def scenario() -> None:
        ari, handler = scene()
        await read_once_settled(ari, handler)
        await handler.dispatch(recording("RecordingStarted", "b1"))
        ari.bridge("b1", ["user1", "caller1"], "simple_bridge")  # the recorder left
        await handler.dispatch(recording("RecordingFinished", "b1"))
        assert "b1" not in handler.state.known_technology
        await asyncio.sleep(0.05)
        await settle(handler)
        assert handler.state.bridges["b1"].forwards_hold and "b1" in handler.state.known_technology
        requests = ari.requests
        await handler.dispatch(ari.event("ChannelHold", "user1"))
        await settle(handler)
        assert ari.requests == requests and handler.stats.actions == {"forwarded": 1}

    asyncio.run(scenario())
