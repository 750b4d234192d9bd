"""Every rule of docs/ari.md, on the pure policy and on the handler over a fake ARI (no Asterisk,
no root). The lab tests (tests/integration/test_ari_hold.py) check what callers really hear."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

import pytest

from ooma_moh.ari.hold import HoldHandler
from ooma_moh.ari.policy import HoldAction, Party, plan_hold, plan_reattach, preset_tenants
from tests.unit.fake_ari import FakeAri, inline, resolver

T = TypeVar("T")

# -- the policy alone ---------------------------------------------------------------------------


def test_preset_gives_each_party_the_single_tenant_among_the_others() -> None:
    assert preset_tenants([Party("user", "acme"), Party("caller", None)]) == {"caller": "acme"}
    assert preset_tenants([Party("a", "acme"), Party("b", "beta")]) == {"a": "beta", "b": "acme"}
    assert preset_tenants([Party("a", None), Party("b", None)]) == {}
    # two tenants among the others: no preset, the holder's tenant decides at the hold
    assert preset_tenants([Party("c", None), Party("a", "acme"), Party("b", "beta")]) == {"a": "beta", "b": "acme"}


@pytest.mark.parametrize(
    "others, forwards, held_class, action, start_on",
    [
        ([], True, None, HoldAction.ALONE, ()),
        (["x", "y"], False, None, HoldAction.CONFERENCE, ()),
        (["x"], True, "tenant-acme", HoldAction.FORWARDED, ()),
        (["x"], True, "default", HoldAction.CORRECTED, ("x",)),
        (["x"], True, None, HoldAction.CORRECTED, ("x",)),
        (["x"], False, "tenant-acme", HoldAction.STARTED, ("x",)),
    ],
)
def test_plan_hold(
    others: list[str], forwards: bool, held_class: str | None, action: HoldAction, start_on: tuple[str, ...]
) -> None:
    plan = plan_hold(others, forwards, held_class, "tenant-acme")
    assert plan.action is action and plan.start_on == start_on
    assert plan.listeners == (tuple(others) if action.plays_music else ())


def test_plan_reattach_restarts_only_music_it_cannot_know_plays() -> None:
    assert plan_reattach(["x"], True, ()).start_on == ()  # Asterisk plays a forwarded hold's music
    assert plan_reattach(["x"], False, ["x"]).start_on == ()  # we started it before the drop
    assert plan_reattach(["x"], False, ()).start_on == ("x",)
    assert plan_reattach(["x", "y"], False, ()).start_on == ()


# -- the handler over a fake ARI --------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def scene(on_file: AbstractSet[str] = frozenset({"acme", "beta"}), **kw: Any) -> tuple[FakeAri, HoldHandler]:
    ari = FakeAri()
    handler = HoldHandler(ari, resolver(set(on_file), kw.get("endpoints")), run_blocking=inline)
    return ari, handler


def two_party(ari: FakeAri, technology: str = "simple_bridge", user_tenant: str | None = "acme") -> None:
    ari.channel("user", "PJSIP/acme-100-00000001", tenant=user_tenant)
    ari.channel("caller", "PJSIP/trunk-00000002")
    ari.bridge("b1", ["user", "caller"], technology)


async def enter(ari: FakeAri, handler: HoldHandler, *channels: str, bridge: str = "b1") -> None:
    for cid in channels:
        await handler.handle(ari.event("ChannelEnteredBridge", cid, bridge))


def test_preset_when_the_call_is_bridged() -> None:
    ari, handler = scene()
    two_party(ari)
    run(enter(ari, handler, "user", "caller"))
    assert ari.class_on("caller") == "tenant-acme"  # the caller hears acme when the user holds
    assert ari.class_on("user") is None  # the caller has no tenant: nothing to preset on the user


def test_users_of_two_tenants_each_get_the_others_class() -> None:
    ari, handler = scene()
    ari.channel("a", "PJSIP/acme-100-00000001", tenant="acme")
    ari.channel("b", "PJSIP/beta-200-00000002", tenant="beta")
    ari.bridge("b1", ["a", "b"])
    run(enter(ari, handler, "a", "b"))
    assert (ari.class_on("a"), ari.class_on("b")) == ("tenant-beta", "tenant-acme")


def test_forwarded_hold_with_the_right_preset_needs_nothing() -> None:
    ari, handler = scene()
    two_party(ari)
    run(enter(ari, handler, "user", "caller"))
    ari.actions.clear()
    run(handler.handle(ari.event("ChannelHold", "user")))
    assert ari.actions == [("mark", "user", "tenant-acme")]
    assert handler.stats.actions == {"forwarded": 1} and handler.holds["user"].listeners == {"caller"}


def test_a_dialplan_bridge_is_left_to_the_dialplan_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Channels in no Stasis application (a dialplan bridge seen through subscribeAll): ARI
    answers 409 to any change. The handler notes them once, warns about nothing, and does not
    claim a hold it cannot act on ("forwarded … class=tenant-acme" while the caller heard
    ``default``, found by test_hold_scenarios.py)."""
    ari, handler = scene()
    two_party(ari)
    ari.outside = {"user", "caller"}
    with caplog.at_level(logging.INFO, logger="ooma_moh.ari.hold"):
        run(enter(ari, handler, "user", "caller"))
        run(handler.handle(ari.event("ChannelHold", "user")))
        run(handler.handle(ari.event("ChannelUnhold", "user")))
    assert ari.actions == [] and handler.stats.actions == {} and handler.holds == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "hold action=outside-stasis" in caplog.text and "forwarded" not in caplog.text


def test_forwarded_hold_with_a_wrong_class_is_corrected() -> None:
    ari, handler = scene()
    two_party(ari)
    ari.bridges["b1"]["channels"] = ["user"]  # the handler saw the user join alone ...
    run(enter(ari, handler, "user"))
    ari.bridge("b1", ["user", "caller"])  # ... and missed the caller joining
    ari.variables[("caller", "CHANNEL(musicclass)")] = "default"
    ari.actions.clear()
    run(handler.handle(ari.event("ChannelHold", "user")))
    assert ("class", "caller", "tenant-acme") in ari.actions and ("moh", "caller", "tenant-acme") in ari.actions
    assert handler.stats.actions == {"corrected": 1}


@pytest.mark.parametrize("technology, extra", [("softmix", None), ("softmix", "Recorder/rec-00000009")])
def test_softmix_bridge_gets_music_started(technology: str, extra: str | None) -> None:
    """A recorded 2-party call (a recorder channel in a softmix bridge): Asterisk plays nothing."""
    ari, handler = scene()
    two_party(ari, technology)
    members = ["user", "caller"]
    if extra:
        ari.channel("rec", extra)
        members.append("rec")
    ari.bridge("b1", members, technology)
    run(enter(ari, handler, *members))
    run(handler.handle(ari.event("ChannelHold", "user")))
    assert ("moh", "caller", "tenant-acme") in ari.actions
    assert not any(a[0] == "moh" and a[1] == "rec" for a in ari.actions)  # never to the recorder
    assert handler.stats.actions == {"started": 1}
    run(handler.handle(ari.event("ChannelUnhold", "user")))
    assert ari.actions[-2:] == [("stop", "caller"), ("mark", "user", "")]


def test_conference_gets_no_music() -> None:
    ari, handler = scene()
    ari.channel("user", "PJSIP/acme-100-00000001", tenant="acme")
    ari.channel("c1", "PJSIP/trunk-00000002")
    ari.channel("c2", "PJSIP/trunk-00000003")
    ari.bridge("b1", ["user", "c1", "c2"], "softmix")
    run(enter(ari, handler, "user", "c1", "c2"))
    ari.actions.clear()
    run(handler.handle(ari.event("ChannelHold", "user")))
    assert [a for a in ari.actions if a[0] == "moh"] == [] and handler.stats.actions == {"conference": 1}


def test_holder_hanging_up_stops_the_forwarded_music() -> None:
    """Asterisk does not stop a forwarded hold's music when the holder hangs up."""
    ari, handler = scene()
    two_party(ari)
    run(enter(ari, handler, "user", "caller"))
    run(handler.handle(ari.event("ChannelHold", "user")))
    ari.actions.clear()
    run(handler.handle(ari.event("ChannelDestroyed", "user")))
    assert ari.actions == [("stop", "caller")]  # and no mark on a channel that is gone
    assert handler.holds == {}


def test_holder_leaving_the_bridge_stops_the_music() -> None:
    ari, handler = scene()
    two_party(ari, "softmix")
    run(enter(ari, handler, "user", "caller"))
    run(handler.handle(ari.event("ChannelHold", "user")))
    ari.bridge("b1", ["caller"], "softmix")
    ari.actions.clear()
    run(handler.handle(ari.event("ChannelLeftBridge", "user", "b1")))
    assert ari.actions == [("stop", "caller"), ("mark", "user", "")]


def test_held_party_hanging_up_is_not_stopped_later() -> None:
    ari, handler = scene()
    two_party(ari, "softmix")
    run(enter(ari, handler, "user", "caller"))
    run(handler.handle(ari.event("ChannelHold", "user")))
    run(handler.handle(ari.event("ChannelDestroyed", "caller")))
    del ari.channels["caller"]
    ari.actions.clear()
    run(handler.handle(ari.event("ChannelUnhold", "user")))
    assert ari.actions == [("mark", "user", "")]


def test_a_channel_joining_during_a_hold_gets_the_music() -> None:
    ari, handler = scene()
    two_party(ari, "softmix")
    run(enter(ari, handler, "user", "caller"))
    run(handler.handle(ari.event("ChannelHold", "user")))
    ari.channel("late", "PJSIP/trunk-00000004")
    ari.channel("ann", "Announcer/ARI-00000005")
    ari.bridge("b1", ["user", "caller", "late", "ann"], "softmix")
    ari.actions.clear()
    run(enter(ari, handler, "late", "ann"))
    assert ("moh", "late", "tenant-acme") in ari.actions
    assert not any(a[1] == "ann" for a in ari.actions if a[0] == "moh")
    assert handler.stats.actions["joined-during-hold"] == 1


@pytest.mark.parametrize(
    "how, expected, reason",
    [
        ("variable", "tenant-acme", None),
        ("accountcode", "tenant-acme", None),
        ("endpoint map", "tenant-acme", None),
        ("unknown tenant", "default", "unknown tenant"),
        ("no tenant", "default", "no tenant on the holder"),
        ("hostile value", "default", "invalid tenant id"),
    ],
)
def test_tenant_of_the_holder_and_its_fallbacks(how: str, expected: str, reason: str | None) -> None:
    ari, handler = scene(endpoints={"PJSIP/acme-100": "acme"})
    tenant = {"variable": "acme", "unknown tenant": "ghost", "hostile value": "a\nb"}.get(how)
    ari.channel(
        "user",
        "PJSIP/acme-100-00000001" if how == "endpoint map" else "PJSIP/x-00000001",
        tenant=tenant,
        accountcode="acme" if how == "accountcode" else "",
        exported=how != "accountcode",
    )
    ari.channel("caller", "PJSIP/trunk-00000002")
    ari.bridge("b1", ["user", "caller"], "softmix")
    run(enter(ari, handler, "user", "caller"))
    run(handler.handle(ari.event("ChannelHold", "user")))
    assert ("moh", "caller", expected) in ari.actions
    assert handler.stats.fallbacks == ({reason: 1} if reason else {})


def test_resync_reattaches_a_hold_and_stops_music_after_a_missed_unhold() -> None:
    ari, handler = scene()
    two_party(ari, "softmix")
    ari.channel("u2", "PJSIP/acme-101-00000005", tenant="acme")
    ari.channel("c2", "PJSIP/trunk-00000006")
    ari.bridge("b2", ["u2", "c2"], "softmix")
    ari.variables[("user", "OOMA_MOH_HOLD")] = "tenant-acme"
    ari.variables[("user", "CHANNEL(rtp,hold)")] = "1"  # still held: re-attach, start the music
    ari.variables[("u2", "OOMA_MOH_HOLD")] = "tenant-acme"
    ari.variables[("u2", "CHANNEL(rtp,hold)")] = "0"  # unheld while we were away
    run(handler.resync())
    assert ("moh", "caller", "tenant-acme") in ari.actions
    assert ("stop", "c2") in ari.actions and ("mark", "u2", "") in ari.actions
    assert set(handler.holds) == {"user"}
    assert handler.stats.actions == {"resynced": 1, "missed-unhold": 1}


def test_an_event_for_a_vanished_channel_is_logged_not_raised() -> None:
    ari, handler = scene()
    two_party(ari)
    run(enter(ari, handler, "user", "caller"))
    event = ari.event("ChannelHold", "user")
    del ari.bridges["b1"]["channels"][1]
    del ari.channels["caller"]
    run(handler.handle(event))  # the caller vanished: a 404 somewhere, handled
    assert handler.stats.actions in ({"alone": 1}, {})


# -- concurrency: bridges in parallel, one bridge in order --------------------------------------


class GatedAri(FakeAri):
    """``get_bridge`` of the gated bridges and ``start_moh`` on the gated channels wait until the
    test opens the gate."""

    def __init__(self, gated: set[str]) -> None:
        super().__init__()
        self.gated = gated
        self.gate = asyncio.Event()

    async def get_bridge(self, bridge_id: str) -> dict[str, Any]:
        if bridge_id in self.gated:
            await self.gate.wait()
        return await super().get_bridge(bridge_id)

    async def start_moh(self, channel_id: str, moh_class: str) -> None:
        if channel_id in self.gated:
            await self.gate.wait()
        await super().start_moh(channel_id, moh_class)


def test_holder_leaving_while_a_joiners_music_starts_stops_it_too() -> None:
    """Found on the lab (a REFER handled by the provider's app: the new leg joins, the old holder
    hangs up): stopping the hold's music while a joiner's was starting raised "Set changed size
    during iteration", and the joiner kept the music of a hold that was over."""

    async def scenario() -> None:
        ari = GatedAri({"late"})
        handler = HoldHandler(ari, resolver({"acme"}), run_blocking=inline)
        two_party(ari, "softmix")
        await enter(ari, handler, "user", "caller")
        await handler.handle(ari.event("ChannelHold", "user"))
        ari.channel("late", "PJSIP/trunk-00000004")
        ari.bridge("b1", ["user", "caller", "late"], "softmix")
        joining = asyncio.ensure_future(handler.handle(ari.event("ChannelEnteredBridge", "late", "b1")))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not joining.done()  # its music is starting
        ari.actions.clear()
        await handler.handle(ari.event("ChannelDestroyed", "user"))
        ari.gate.set()
        await joining
        assert ("stop", "caller") in ari.actions and ("stop", "late") in ari.actions, ari.actions
        assert ari.actions.index(("moh", "late", "tenant-acme")) < ari.actions.index(("stop", "late"))

    asyncio.run(scenario())


def test_music_starts_before_the_bridge_check_answers() -> None:
    """A known softmix bridge: the held party's music does not wait for GET /bridges (under load
    each ARI round trip costs hundreds of ms); the answer is checked afterwards."""

    async def scenario() -> None:
        ari = GatedAri({"b1"})
        handler = HoldHandler(ari, resolver({"acme"}), run_blocking=inline)
        two_party(ari, "softmix")
        await enter(ari, handler, "user", "caller")
        ari.actions.clear()
        hold = asyncio.ensure_future(handler.handle(ari.event("ChannelHold", "user")))
        for _ in range(50):
            await asyncio.sleep(0)
        # the music, and the hold's mark on the holder with it (for a successor's resync)
        assert sorted(ari.actions) == [("mark", "user", "tenant-acme"), ("moh", "caller", "tenant-acme")]
        assert not hold.done()
        ari.gate.set()
        await hold
        assert handler.stats.actions == {"started": 1}
        assert ari.actions.count(("mark", "user", "tenant-acme")) == 1

    asyncio.run(scenario())


def test_a_bridge_that_stopped_forwarding_unseen_is_caught_by_the_check() -> None:
    """Events said a 2-party simple bridge (Asterisk forwards the hold, preset right); the bridge
    is softmix by now (a technology change has no event): music is started after the check."""
    ari, handler = scene()
    two_party(ari)
    run(enter(ari, handler, "user", "caller"))
    ari.bridge("b1", ["user", "caller"], "softmix")
    ari.actions.clear()
    run(handler.handle(ari.event("ChannelHold", "user")))
    assert sorted(ari.actions) == [("mark", "user", "tenant-acme"), ("moh", "caller", "tenant-acme")]
    assert handler.stats.actions == {"started": 1}


def test_a_slow_bridge_does_not_delay_another_and_its_own_events_stay_in_order() -> None:
    async def scenario() -> list[tuple[str, ...]]:
        ari = GatedAri({"c1"})
        handler = HoldHandler(ari, resolver({"acme"}), run_blocking=inline)
        for n in ("1", "2"):
            ari.channel(f"u{n}", f"PJSIP/acme-10{n}-0000000{n}", tenant="acme")
            ari.channel(f"c{n}", f"PJSIP/trunk-0000001{n}")
            ari.bridge(f"b{n}", [f"u{n}", f"c{n}"], "softmix")
            for cid in (f"u{n}", f"c{n}"):
                await handler.handle(ari.event("ChannelEnteredBridge", cid, f"b{n}"))
        ari.actions.clear()
        await handler.dispatch(ari.event("ChannelHold", "u1"))  # stuck starting c1's music
        await handler.dispatch(ari.event("ChannelUnhold", "u1"))  # must wait for the hold
        await handler.dispatch(ari.event("ChannelHold", "u2"))
        for _ in range(50):
            await asyncio.sleep(0)
            if ("moh", "c2", "tenant-acme") in ari.actions:
                break
        assert ("moh", "c2", "tenant-acme") in ari.actions  # b2 served while b1 waits
        assert not any(a[1] == "c1" for a in ari.actions)
        ari.gate.set()
        await handler.dispatcher.drain()
        return [a for a in ari.actions if a[1] == "c1"]

    # the class was preset when c1 joined; then the hold's music, then the unhold's stop: in order
    assert asyncio.run(scenario()) == [("moh", "c1", "tenant-acme"), ("stop", "c1")]


def test_dispatcher_keeps_order_per_key_and_survives_a_failure() -> None:
    from ooma_moh.ari.dispatch import KeyedDispatcher

    async def scenario() -> list[str]:
        done: list[str] = []
        dispatcher = KeyedDispatcher()

        def step(name: str, delay: int, fail: bool = False) -> Callable[[], Awaitable[None]]:
            async def work() -> None:
                for _ in range(delay):
                    await asyncio.sleep(0)
                if fail:
                    raise RuntimeError("boom")
                done.append(name)

            return work

        dispatcher.submit("a", step("a1", 5))
        dispatcher.submit("a", step("a2", 0, fail=True))
        dispatcher.submit("a", step("a3", 0))
        dispatcher.submit("b", step("b1", 0))
        await dispatcher.drain()
        assert dispatcher.pending == 0
        return done

    assert asyncio.run(scenario()) == ["b1", "a1", "a3"]


def test_dispatcher_caps_how_many_keys_run_at_once() -> None:
    from ooma_moh.ari.dispatch import KeyedDispatcher

    async def scenario() -> int:
        dispatcher = KeyedDispatcher(parallel=2)
        running = peak = 0

        async def work() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            for _ in range(5):
                await asyncio.sleep(0)
            running -= 1

        for key in "abcdef":
            dispatcher.submit(key, work)
        await dispatcher.drain()
        return peak

    assert asyncio.run(scenario()) == 2
