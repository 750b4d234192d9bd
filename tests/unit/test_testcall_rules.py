"""Test calls ("call my phone", docs/http.md "Test call"): the rules of ooma_moh/testcall.py on a
fake clock, the dialler of ooma_moh/ari/testcall.py on an in-memory ARI, and the API's answers on
the in-memory HTTP world. What the phone hears is proved on the lab Asterisk
(tests/integration/test_http_testcall.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ooma_moh.ari import testcall as ari_testcall
from ooma_moh.ari.listener import EventHandler
from ooma_moh.ari.testcall import AriUnavailable, Dialler, Listener
from ooma_moh.config import Settings
from ooma_moh.errors import AriRequestFailed, AsteriskError
from ooma_moh.testcall import (
    GRACE_S,
    KEEP_S,
    PER_HOUR,
    RING_S,
    WINDOW_S,
    Call,
    CallBook,
    CallRefused,
    CallState,
    FailReason,
    dial_string,
    reason_of_cause,
)
from tests.unit.fake_ari import FakeAri, inline, resolver
from tests.unit.test_http_api_rules import World, bearer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ring(book: CallBook, tenant: str = "acme", endpoint: str = "PJSIP/acme-100") -> Call:
    return book.admit(tenant, endpoint, endpoint, "api token 1234abcd")


def event(kind: str, channel_id: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "channel": {"id": channel_id, "name": "PJSIP/acme-100-00000001"}, **more}


# -- the rules -----------------------------------------------------------------------------------
def test_the_dial_string_is_the_template_over_the_endpoint_and_its_halves() -> None:
    assert dial_string("{endpoint}", "PJSIP/acme-100") == "PJSIP/acme-100"
    assert dial_string("Local/{resource}@test-calls", "PJSIP/acme-100") == "Local/acme-100@test-calls"
    assert dial_string("{tech}/{resource}/sip:{resource}@pbx", "PJSIP/a-1") == "PJSIP/a-1/sip:a-1@pbx"


def test_a_hang_up_cause_names_why_an_unanswered_call_failed() -> None:
    assert reason_of_cause(17) is FailReason.BUSY
    assert reason_of_cause(19) is FailReason.NO_ANSWER and reason_of_cause(18) is FailReason.NO_ANSWER
    for cause in (0, 1, 3, 16, 20, 21, 34, 38):
        assert reason_of_cause(cause) is FailReason.UNREACHABLE


def test_one_call_at_a_time_per_tenant_then_the_next_once_it_is_over() -> None:
    clock = Clock()
    book = CallBook(30.0, clock=clock)
    first = ring(book)
    with pytest.raises(CallRefused) as refused:
        ring(book)
    assert refused.value.code == "test_call_in_progress"
    assert refused.value.retry_after == RING_S + 30 + GRACE_S  # rings, then plays, at the latest
    ring(book, "beta", "PJSIP/beta-1")  # another tenant is not held up
    clock.now += 3
    assert book.apply(event("StasisStart", first.channel_id)) is first
    with pytest.raises(CallRefused) as refused:
        ring(book)
    assert refused.value.retry_after == 30 + GRACE_S  # answered: only the music is left
    book.apply(event("ChannelDestroyed", first.channel_id, cause=16))
    assert first.state is CallState.ENDED and first.reason is None
    ring(book)


def test_the_sixth_call_in_an_hour_is_refused_until_the_first_leaves_the_hour() -> None:
    clock = Clock()
    book = CallBook(30.0, clock=clock)
    first_at = clock.now
    for _ in range(PER_HOUR):
        call = ring(book)
        book.destroyed(call, 17)  # busy: it counts all the same
        clock.now += 60
    with pytest.raises(CallRefused) as refused:
        ring(book)
    assert refused.value.code == "too_many_test_calls"
    assert refused.value.retry_after == int(first_at + WINDOW_S - clock.now)
    ring(book, "beta", "PJSIP/beta-1")  # per tenant
    clock.now = first_at + WINDOW_S - 1
    with pytest.raises(CallRefused):
        ring(book)
    clock.now = first_at + WINDOW_S
    ring(book)


def test_a_call_ari_never_took_does_not_count() -> None:
    book = CallBook(30.0, clock=Clock())
    for _ in range(PER_HOUR + 3):
        book.withdraw(ring(book))
    ring(book)


def test_a_call_is_found_only_by_its_own_tenant_and_forgotten_after_an_hour() -> None:
    clock = Clock()
    book = CallBook(30.0, clock=clock)
    call = ring(book)
    assert book.find("acme", call.id) is call
    assert book.find("beta", call.id) is None and book.find("acme", "nope") is None
    book.destroyed(call, 19)
    assert (call.state, call.reason) == (CallState.FAILED, FailReason.NO_ANSWER)
    clock.now += KEEP_S + 1
    assert book.find("acme", call.id) is None


def test_events_move_a_call_along_and_others_change_nothing() -> None:
    book = CallBook(30.0, clock=Clock())
    call = ring(book)
    assert book.apply(event("ChannelStateChange", call.channel_id, channel_state="Ringing")) is None
    assert book.apply(event("ChannelDestroyed", call.channel_id + ";2", cause=16)) is None  # a Local's half
    assert book.apply(event("ChannelDestroyed", "someone-else", cause=16)) is None
    assert book.apply({"type": "ChannelDestroyed"}) is None
    assert call.state is CallState.RINGING
    book.apply(event("StasisStart", call.channel_id))
    assert book.apply(event("StasisStart", call.channel_id)) is None  # once
    assert call.state is CallState.RINGING  # answered, the music not started yet
    book.playing(call, "tenant-acme")
    assert call.body(30.0)["state"] == "playing"
    book.apply(event("ChannelDestroyed", call.channel_id, cause=16))
    body = call.body(30.0)
    assert body["state"] == "ended" and body["reason"] is None and body["class"] == "tenant-acme"
    assert body["answered_at"] and body["ended_at"] and body["endpoint"] == "PJSIP/acme-100"


def test_a_busy_phone_fails_the_call_busy() -> None:
    book = CallBook(30.0, clock=Clock())
    call = ring(book)
    book.apply(event("ChannelDestroyed", call.channel_id, cause=17))
    assert call.body(30.0)["state"] == "failed" and call.body(30.0)["reason"] == "busy"


# -- the dialler on an in-memory ARI -------------------------------------------------------------
class FakeListener:
    def __init__(self, on_connect: Callable[[], Awaitable[None]], up: bool) -> None:
        self.connected = asyncio.Event()
        self.on_connect, self.up = on_connect, up
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        if self.up:
            await self.on_connect()
            self.connected.set()
        await self.stopped.wait()

    async def stop(self) -> None:
        self.stopped.set()


class Phones(FakeAri):
    """ARI with phones: ``originate`` makes a ringing channel; ``answer``/``busy`` act as the phone
    would; ``hangup`` destroys the channel and tells the application."""

    def __init__(self, *, up: bool = True, refuse: int | None = None) -> None:
        super().__init__()
        self.up, self.refuse = up, refuse
        self.dialled: list[dict[str, Any]] = []
        self.listeners: list[FakeListener] = []
        self.deliver: EventHandler | None = None
        self.apps: list[str] = []
        self.closed = False

    def listen(self, app: str, on_event: EventHandler, on_connect: Callable[[], Awaitable[None]]) -> Listener:
        self.apps.append(app)
        self.deliver = on_event
        self.listeners.append(FakeListener(on_connect, self.up))
        return self.listeners[-1]

    async def originate(self, endpoint: str, *, app: str, channel_id: str, timeout_s: int, caller_id: str) -> None:
        if self.refuse is not None:
            raise AriRequestFailed("POST", "/channels", self.refuse, "Allocation failed")
        self.dialled.append({"endpoint": endpoint, "app": app, "id": channel_id, "timeout": timeout_s})
        self.channel(channel_id, f"{endpoint}-00000001")

    async def tell(self, kind: str, channel_id: str, **more: Any) -> None:
        assert self.deliver is not None
        await self.deliver(event(kind, channel_id, **more))

    async def hangup(self, channel_id: str) -> None:
        self.actions.append(("hangup", channel_id))
        self.channels.pop(channel_id, None)
        await self.tell("ChannelDestroyed", channel_id, cause=16)

    async def close(self) -> None:
        self.closed = True


def dialler(phones: Phones, on_file: set[str], seconds: float = 0.05) -> Dialler:
    settings = Settings(ari_app="ooma-moh", test_call_dial="Local/{resource}@test-calls")
    return Dialler(settings, phones, phones.listen, resolver(on_file), inline, CallBook(seconds))


async def until(done: Callable[[], bool]) -> None:
    for _ in range(2000):
        if done():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("never happened")


def test_an_answered_call_hears_the_tenants_class_then_is_hung_up_and_ends() -> None:
    async def scenario() -> None:
        phones = Phones()
        calls = dialler(phones, on_file={"acme"})
        call = await calls.place("acme", "PJSIP/acme-100", "api token 1234abcd")
        app = phones.apps[0]
        assert re.fullmatch("ooma-moh-test-call-[0-9a-f]{8}", app)  # this server's own application
        assert phones.dialled == [
            {"endpoint": "Local/acme-100@test-calls", "app": app, "id": call.channel_id, "timeout": 30}
        ]
        assert call.state is CallState.RINGING and phones.actions == []
        await phones.tell("StasisStart", call.channel_id)
        await until(lambda: call.over)
        cid = call.channel_id
        assert phones.actions == [("class", cid, "tenant-acme"), ("moh", cid, "tenant-acme"), ("hangup", cid)]
        assert (call.state, call.moh_class) == (CallState.ENDED, "tenant-acme")
        await until(lambda: phones.listeners[0].stopped.is_set())  # no call left: not listening
        await calls.close()
        assert phones.closed

    asyncio.run(scenario())


def test_a_tenant_without_a_file_hears_default_as_its_held_callers_do() -> None:
    async def scenario() -> None:
        phones = Phones()
        calls = dialler(phones, on_file=set())
        call = await calls.place("acme", "PJSIP/acme-100", "tester")
        await phones.tell("StasisStart", call.channel_id)
        await until(lambda: call.over)
        assert ("moh", call.channel_id, "default") in phones.actions and call.moh_class == "default"
        await calls.close()

    asyncio.run(scenario())


def test_a_phone_that_hangs_up_first_ends_the_call_without_our_hang_up() -> None:
    async def scenario() -> None:
        phones = Phones()
        calls = dialler(phones, on_file={"acme"}, seconds=30)
        call = await calls.place("acme", "PJSIP/acme-100", "tester")
        await phones.tell("StasisStart", call.channel_id)
        await until(lambda: call.state is CallState.PLAYING)
        await phones.tell("ChannelDestroyed", call.channel_id, cause=16)
        await until(lambda: call.over and not calls.book.active())
        assert call.state is CallState.ENDED and ("hangup", call.channel_id) not in phones.actions
        await calls.close()

    asyncio.run(scenario())


def test_without_ari_nothing_is_placed_nor_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ari_testcall, "CONNECT_S", 0.01)

    async def scenario() -> None:
        phones = Phones(up=False)
        calls = dialler(phones, on_file={"acme"})
        for _ in range(PER_HOUR + 1):
            with pytest.raises(AriUnavailable):
                await calls.place("acme", "PJSIP/acme-100", "tester")
        assert phones.dialled == [] and calls.book.active() == []
        assert all(listener.stopped.is_set() for listener in phones.listeners)
        await calls.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("status", "placed"), [(500, True), (400, True), (401, False), (503, False)])
def test_an_origination_asterisk_refuses(status: int, placed: bool) -> None:
    async def scenario() -> None:
        phones = Phones(refuse=status)
        calls = dialler(phones, on_file={"acme"})
        if placed:  # the dial string reaches nothing: failed unreachable, and it counts
            call = await calls.place("acme", "PJSIP/acme-100", "tester")
            assert (call.state, call.reason) == (CallState.FAILED, FailReason.UNREACHABLE)
            assert calls.book.find("acme", call.id) is call
        else:  # our credentials, Asterisk unwell: ARI unavailable, nothing counted
            with pytest.raises(AriUnavailable):
                await calls.place("acme", "PJSIP/acme-100", "tester")
            assert calls.book.active() == []
        await calls.close()

    asyncio.run(scenario())


def test_a_call_whose_channel_vanished_while_the_events_were_lost_ends_at_the_reconnection() -> None:
    async def scenario() -> None:
        phones = Phones()
        calls = dialler(phones, on_file={"acme"}, seconds=30)
        call = await calls.place("acme", "PJSIP/acme-100", "tester")
        await phones.tell("StasisStart", call.channel_id)
        await until(lambda: call.state is CallState.PLAYING)
        phones.channels.pop(call.channel_id)  # hung up while the WebSocket was down
        await calls.on_connect()
        await until(lambda: not calls.book.active())
        assert call.state is CallState.ENDED
        await calls.close()

    asyncio.run(scenario())


class Failing(Phones):
    async def start_moh(self, channel_id: str, moh_class: str) -> None:
        raise AsteriskError("cannot reach ARI")

    async def hangup(self, channel_id: str) -> None:
        raise AsteriskError("cannot reach ARI")


def test_ari_lost_while_answering_fails_the_call_ari_down() -> None:
    async def scenario() -> None:
        phones = Failing()
        calls = dialler(phones, on_file={"acme"})
        call = await calls.place("acme", "PJSIP/acme-100", "tester")
        phones.listeners[0].connected.clear()  # and the WebSocket with it
        await phones.tell("StasisStart", call.channel_id)
        await until(lambda: call.over)
        assert (call.state, call.reason) == (CallState.FAILED, FailReason.ARI_DOWN)
        await calls.close()

    asyncio.run(scenario())


# -- the API -------------------------------------------------------------------------------------
def test_the_api_lists_endpoints_places_follows_and_refuses(tmp_path: Any) -> None:
    world = World(tmp_path)
    phones = Phones()
    world.backend.test_call_line = lambda: (phones, phones.listen)
    world.catalog.map_endpoint("PJSIP/acme-200", "acme")
    world.catalog.map_endpoint("PJSIP/acme-100", "acme")
    world.catalog.map_endpoint("PJSIP/beta-100", "beta")
    base = "/api/v1/tenants/acme"

    async def scenario(client: TestClient[Any, Any]) -> None:
        acme, beta = bearer(world.acme), bearer(world.beta)
        listed = await client.get(f"{base}/endpoints", headers=acme)
        assert await listed.json() == {"endpoints": ["PJSIP/acme-100", "PJSIP/acme-200"]}
        assert (await client.get(f"{base}/endpoints", headers=beta)).status == 404
        not_mine = []
        for endpoint in ("PJSIP/beta-100", "PJSIP/nobody", "not an endpoint", ""):
            answer = await client.post(f"{base}/moh/test-call", json={"endpoint": endpoint}, headers=acme)
            not_mine.append((answer.status, await answer.json()))
        refusal = {"error": {"code": "no_endpoint", "message": "no such endpoint in this account"}}
        assert not_mine == [(404, refusal)] * 4  # the same answer for each
        for body in (b"{", b"[]", b'{"endpoint": 3}', b"[" * 3000, b" " * 5000):
            bad = await client.post(f"{base}/moh/test-call", data=body, headers=acme)
            assert (bad.status, (await bad.json())["error"]["code"]) == (400, "invalid_test_call"), body[:10]
        placed = await client.post(f"{base}/moh/test-call", json={"endpoint": "PJSIP/acme-100"}, headers=acme)
        assert placed.status == 202
        call = (await placed.json())["call"]
        again = await client.post(f"{base}/moh/test-call", json={"endpoint": "PJSIP/acme-200"}, headers=acme)
        assert again.status == 429 and int(again.headers["Retry-After"]) == RING_S + 30 + GRACE_S
        assert (await again.json())["error"]["code"] == "test_call_in_progress"
        state = await client.get(f"{base}/moh/test-call/{call}", headers=acme)
        assert (await state.json())["state"] == "ringing"
        other = await client.get(f"/api/v1/tenants/beta/moh/test-call/{call}", headers=beta)
        assert other.status == 404
        await phones.tell("StasisStart", f"ooma-moh-test-{call}")
        await until(lambda: ("moh", f"ooma-moh-test-{call}", "default") in phones.actions)
        playing = await (await client.get(f"{base}/moh/test-call/{call}", headers=acme)).json()
        assert playing["state"] == "playing" and playing["class"] == "default"  # acme has no file
        assert playing["endpoint"] == "PJSIP/acme-100" and playing["reason"] is None

    world.run(scenario)
    assert ("hangup", phones.dialled[0]["id"]) in phones.actions  # the server stopped: hung up


def test_the_api_says_503_when_ari_is_out_of_reach(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ari_testcall, "CONNECT_S", 0.01)
    world = World(tmp_path)
    phones = Phones(up=False)
    world.backend.test_call_line = lambda: (phones, phones.listen)
    world.catalog.map_endpoint("PJSIP/acme-100", "acme")

    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.post(
            "/api/v1/tenants/acme/moh/test-call", json={"endpoint": "PJSIP/acme-100"}, headers=bearer(world.acme)
        )
        assert answer.status == 503 and answer.headers["Retry-After"] == "30"
        assert (await answer.json())["error"]["code"] == "ari_unavailable"

    world.run(scenario)
