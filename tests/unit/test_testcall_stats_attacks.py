"""Hostile input against hold statistics and test calls (docs/security.md, "Hold statistics and test
calls"): channel variables of any text never become a tenant in the catalog, holds whose end was
lost with the events are not followed for ever, a mapped endpoint reaches ARI's originate as
itself, the server bounds its test calls across tenants, and an origination that fails in a way
nobody foresaw never leaves a tenant "in progress"."""

from __future__ import annotations

import asyncio
import urllib.parse
from datetime import date
from typing import Any

import pytest
from aiohttp import web

from ooma_moh.ari.client import AriClient
from ooma_moh.ari.tally import HoldTally, StatsWriter
from ooma_moh.errors import InvalidTenantId
from ooma_moh.holdstats import tenant_of_class
from ooma_moh.model import validate_endpoint
from ooma_moh.storage.memory import MemoryCatalog
from ooma_moh.testcall import AT_ONCE, GRACE_S, PER_HOUR, RING_S, CallBook, CallRefused, CallState, FailReason
from ooma_moh.testcall import dial_string as dial
from tests.unit.test_hold_rules import enter, run, scene, two_party
from tests.unit.test_hold_stats_rules import ev
from tests.unit.test_testcall_rules import Clock, Phones, dialler, ring

HOSTILE_TENANTS = ["x" * 10_000, "acme\nFORGED", "-leading-dash", "a b", "acme;DROP", "é", "a" * 65]


async def written(handler: Any) -> MemoryCatalog:
    """What the handler's tally writes to a catalog."""
    store = MemoryCatalog()
    await StatsWriter(handler.tally, lambda: store, retention_days=400).close()
    return store


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS, ids=lambda t: repr(t[:16]))
def test_a_channel_variable_that_is_no_tenant_id_never_reaches_the_catalog(tenant: str) -> None:
    """OOMA_MOH_TENANT of any text on a Stasis bridge's holder (was: stored as a tenant id, 10,000
    characters and newlines included)."""
    ari, handler = scene()
    two_party(ari, user_tenant=tenant)

    async def go() -> MemoryCatalog:
        await enter(ari, handler, "user", "caller")
        await handler.handle(ari.event("ChannelHold", "user"))
        await handler.handle(ari.event("ChannelUnhold", "user"))
        return await written(handler)

    store = run(go())
    assert store.hold_totals(date(2000, 1, 1), date(2100, 1, 1)) == {}
    assert handler.tally.open == {} and handler.tally.ended == []


def test_a_dialplan_class_that_holds_no_tenant_id_is_not_a_tenant() -> None:
    """A dialplan bridge whose holder has no tenant, its held party given a made-up class."""
    assert [tenant_of_class(c, "tenant-") for c in ("tenant-acme", "tenant-", "tenant-a b", "tenant-" + "x" * 70)] == [
        "acme",
        None,
        None,
        None,
    ]
    ari, handler = scene()
    two_party(ari, user_tenant=None)
    ari.outside = {"user", "caller"}
    ari.variables[("caller", "CHANNEL(musicclass)")] = "tenant-evil\x1b[31m"

    async def go() -> MemoryCatalog:
        await enter(ari, handler, "user", "caller")
        await handler.handle(ari.event("ChannelHold", "user"))
        await asyncio.gather(*handler._lookups)
        await handler.handle(ari.event("ChannelUnhold", "user"))
        return await written(handler)

    assert run(go()).hold_totals(date(2000, 1, 1), date(2100, 1, 1)) == {}


def test_a_valid_tenant_is_still_counted_when_classified_directly() -> None:
    tally = HoldTally()
    for n, tenant in enumerate(["acme", "x" * 10_000, "acme\n"]):
        tally.observe(ev("ChannelHold", f"h{n}", 0.0), ["caller"])
        tally.classify(f"h{n}", tenant, fallback=False)
        tally.observe(ev("ChannelUnhold", f"h{n}", 3.0), [])
    assert [(t, d.holds) for t, d in tally.take()] == [("acme", 1)]


def test_holds_whose_end_was_lost_with_the_events_are_forgotten_at_the_reconnection() -> None:
    """1,000 holds in progress when the WebSocket drops; their channels hang up meanwhile (an
    Asterisk restart); one holder unholds unseen. Before, all stayed in the tally for ever, and
    the missed unhold's hold was counted up to the holder's hang-up."""
    ari, handler = scene()
    two_party(ari)

    async def go() -> None:
        await enter(ari, handler, "user", "caller")
        await handler.handle(ari.event("ChannelHold", "user"))
        for n in range(1000):  # holds of channels that vanish while the events are lost
            handler.tally.observe(ev("ChannelHold", f"gone{n}", 0.0), [f"far{n}"])
        ari.variables[("user", "CHANNEL(rtp,hold)")] = "0"  # unheld while we were away
        await handler.resync()
        await handler.handle(ari.event("ChannelDestroyed", "user"))

    run(go())
    assert handler.tally.open == {} and handler.tally.held_by == {}
    assert handler.tally.take() == []  # the missed unhold's length is unknown: not counted


def test_a_hold_still_in_progress_after_the_reconnection_is_still_counted() -> None:
    tally = HoldTally()
    tally.observe(ev("ChannelHold", "user", 0.0), ["caller", "gone"])
    tally.classify("user", "acme", fallback=False)
    tally.forget_gone({"user", "caller"})
    tally.observe(ev("ChannelUnhold", "user", 4.0), [])
    ((tenant, day),) = tally.take()
    assert (tenant, day.holds, day.seconds) == ("acme", 1, 4.0)


# -- test calls ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "endpoint"),
    [
        ("{endpoint}", "PJSIP/acme+100@pbx.example"),  # '+' is a space in Asterisk's query decoding
        ("Local/{resource}@test-calls", "PJSIP/100@trunk-a"),
        ("{tech}/{resource}&app=other&channelId=x#?=", "SIP/a.b-c_d"),  # an operator's odd template
    ],
)
def test_the_dial_string_reaches_aris_originate_as_itself(template: str, endpoint: str) -> None:
    """ARI's query string is decoded the way Asterisk's http.c does it (``+`` and ``%XX``): the
    dial string arrives whole, and no other parameter appears."""
    seen: list[str] = []

    async def channels(request: web.Request) -> web.Response:
        seen.append(request.query_string)
        return web.json_response({"id": "x"})

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/ari/channels", channels)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = AriClient(f"http://127.0.0.1:{port}", "u", "p")
        try:
            await client.originate(dial(template, endpoint), app="a", channel_id="c", timeout_s=30, caller_id="t")
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(go())
    (raw,) = seen
    params = urllib.parse.parse_qs(raw, keep_blank_values=True, strict_parsing=True)
    assert params == {"endpoint": [dial(template, endpoint)], "app": ["a"], "channelId": ["c"],
                      "timeout": ["30"], "callerId": ["t"]}  # fmt: skip


@pytest.mark.parametrize(
    "name", ["PJSIP/a&b", "PJSIP/a%26b", "PJSIP/{endpoint}", "PJSIP/a\nb", "PJSIP/é", "PJSIP/a b", "PJSIP/" + "a" * 200]
)
def test_the_endpoint_map_takes_no_name_that_could_break_out_of_the_dial_string(name: str) -> None:
    with pytest.raises(InvalidTenantId, match="invalid endpoint"):
        validate_endpoint(name)


def test_the_server_places_at_most_at_once_test_calls_whatever_their_tenants() -> None:
    """Rules 2 and 3 bound one tenant; many tenants (or an operator token) at once were not."""
    clock = Clock()
    book = CallBook(30, clock=clock)
    calls = [ring(book, f"t{n}", f"PJSIP/t{n}") for n in range(AT_ONCE)]
    with pytest.raises(CallRefused) as refused:
        ring(book, "late", "PJSIP/late")
    assert refused.value.code == "test_calls_busy"
    assert refused.value.retry_after == RING_S + 30 + GRACE_S  # the first to end, at the latest
    assert all(c.tenant != "late" for c in book.active())  # not counted: the tenant may try again
    book.lost(calls[0], FailReason.BUSY)
    assert ring(book, "late", "PJSIP/late").state is CallState.RINGING
    for _ in range(PER_HOUR - 1):  # a refused call never counted toward the hour
        book.lost(book.active()[-1], FailReason.BUSY)
        ring(book, "late", "PJSIP/late")


class Garbled(Phones):
    """ARI that answers an origination with what cannot be read (a proxy's page, a truncated body)."""

    async def originate(self, endpoint: str, *, app: str, channel_id: str, timeout_s: int, caller_id: str) -> None:
        await super().originate(endpoint, app=app, channel_id=channel_id, timeout_s=timeout_s, caller_id=caller_id)
        raise ValueError("Expecting value: line 1 column 1 (char 0)")


def test_an_origination_that_fails_unexpectedly_never_leaves_the_tenant_in_progress() -> None:
    """Before, the call stayed ``ringing`` for ever: the tenant could never call again, and it
    held one of the server's AT_ONCE places until a restart."""

    async def scenario() -> None:
        phones = Garbled()
        calls = dialler(phones, on_file={"acme"})
        call = await calls.place("acme", "PJSIP/acme-100", "tester")
        assert call.state is CallState.FAILED  # its end as Asterisk reports it, else "ARI down"
        assert ("hangup", call.channel_id) in phones.actions  # dialled perhaps: hung up
        assert calls.book.active() == []
        again = await calls.place("acme", "PJSIP/acme-100", "tester")
        assert again.over and len(phones.dialled) == 2
        await calls.close()

    asyncio.run(scenario())
