"""Connections before they are requests (issue 23, item 1): slowloris and floods against the real
listener of ``serve http`` (http/guard.py) over the in-memory fakes, on loopback sockets. A
partial header is cut at the header timeout, a silent connection at the idle timeout; one client
address cannot take more than its cap; a full server makes room by closing its oldest idle
connection and refuses only when every connection is in a request; malformed requests get the
API's JSON error shape; all of it said in one aggregated INFO line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ooma_moh.http import guard as guard_module
from ooma_moh.http.app import make_app
from ooma_moh.http.guard import ConnectionGuard, Limits, fit_descriptor_limit
from ooma_moh.http.server import Listening, listen
from tests.unit.test_http_api_rules import World

ATTACKER = "127.0.0.2"  # loopback has all of 127/8: another client address on this machine
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "


def run(tmp_path: Path, scenario: Callable[[Listening], Awaitable[None]], **fields: Any) -> None:
    serve(World(tmp_path, http_listen="127.0.0.1:0", **fields), scenario)


def serve(world: World, scenario: Callable[[Listening], Awaitable[None]]) -> None:
    """``scenario`` against ``world``'s application behind the guard, on a free loopback port."""

    async def go() -> None:
        guard = ConnectionGuard(Limits.of(world.settings))
        listening = await listen(make_app(world.backend, guard.middleware), guard, world.settings)
        try:
            await scenario(listening)
        finally:
            await listening.stop()

    asyncio.run(go())


@contextlib.asynccontextmanager
async def opened(
    port: int, count: int, send: bytes = PARTIAL, source: str = ATTACKER
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """``count`` connections from ``source`` that each sent ``send`` (a header never finished)."""
    conns = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            writer.write(send)
            conns.append((reader, writer))
        await asyncio.gather(*(w.drain() for _, w in conns))
        yield conns
    finally:
        for _, writer in conns:
            writer.close()


async def healthz(port: int) -> bytes:
    """What a legitimate client from 127.0.0.1 gets for ``GET /healthz``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader, within_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes (fails if it keeps the connection open)."""
    return await asyncio.wait_for(reader.read(), within_s)


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ooma_moh.http.quiet"]


def test_one_client_cannot_take_more_than_its_share(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(listening: Listening) -> None:
        async with opened(listening.port, 5) as kept, opened(listening.port, 20) as refused:
            for reader, _ in refused:
                answer = await closed_by_server(reader)
                assert answer.startswith(b"HTTP/1.1 503"), answer[:60]
                assert b"Retry-After: 1" in answer
                body = json.loads(answer.partition(b"\r\n\r\n")[2])
                assert body["error"]["code"] == "too_many_connections"
            assert listening.guard.open_connections() == 5
            assert (await healthz(listening.port)).startswith(b"HTTP/1.1 200")  # another client is served
            assert not any(reader.at_eof() for reader, _ in kept)

    with caplog.at_level(logging.INFO):
        run(tmp_path, scenario, http_max_connections_per_client=5)
    assert said(caplog) == ["connections refused or closed early: 20 (refused: per-client cap 20)"]


def test_a_full_server_closes_its_oldest_idle_connection_to_serve_a_new_one(tmp_path: Path) -> None:
    async def scenario(listening: Listening) -> None:
        async with opened(listening.port, 10) as idle:
            assert (await healthz(listening.port)).startswith(b"HTTP/1.1 200")
            assert await closed_by_server(idle[0][0]) == b""  # the oldest made room
            async with opened(listening.port, 2):  # 9 + 2: one more must go, the next oldest
                assert await closed_by_server(idle[1][0]) == b""
                assert listening.guard.open_connections() == 10
                assert not any(reader.at_eof() for reader, _ in idle[2:])

    run(tmp_path, scenario, http_max_connections=10, http_max_connections_per_client=0)


def test_a_full_server_of_requests_in_progress_refuses_the_new_one(tmp_path: Path) -> None:
    world = World(tmp_path, http_listen="127.0.0.1:0", http_max_connections=2, http_max_connections_per_client=0)
    upload = (
        "PUT /api/v1/tenants/{tenant}/moh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
    )

    async def scenario(listening: Listening) -> None:
        conns = []
        for tenant, secret in (("acme", world.acme), ("beta", world.beta)):  # bodies that never finish
            reader, writer = await asyncio.open_connection("127.0.0.1", listening.port)
            writer.write(upload.format(tenant=tenant, secret=secret).encode())
            conns.append((reader, writer))
        for _ in range(200):  # until both handlers run (reading their bodies)
            if listening.guard.busy_connections() == 2:
                break
            await asyncio.sleep(0.05)
        assert listening.guard.busy_connections() == 2
        assert (await healthz(listening.port)).startswith(b"HTTP/1.1 503")
        assert not any(reader.at_eof() for reader, _ in conns)  # requests in progress are never evicted
        for _, writer in conns:
            writer.close()

    serve(world, scenario)


def test_a_slow_header_and_a_silent_connection_are_closed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(listening: Listening) -> None:
        async with opened(listening.port, 3) as slow, opened(listening.port, 2, send=b"") as silent:
            for reader, _ in slow + silent:
                assert await closed_by_server(reader) == b""
            assert listening.guard.open_connections() == 0

    with caplog.at_level(logging.INFO):
        run(tmp_path, scenario, http_header_timeout_s=0.3, http_idle_timeout_s=0.6)
    assert said(caplog) == ["connections refused or closed early: 3 (header timeout 3)"]  # idle is ordinary


def test_a_request_aiohttp_cannot_parse_is_answered_in_the_api_shape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """…and leaves no line of its own: neither aiohttp's traceback nor an access line (the minute's
    aggregated line counts it)."""

    async def scenario(listening: Listening) -> None:
        async with opened(listening.port, 1, send=b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", source="127.0.0.1") as c:
            answer = await closed_by_server(c[0][0])
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 400") and b"application/json" in head, head  # version unknown
        assert json.loads(body)["error"]["code"] == "malformed_request"
        assert (await healthz(listening.port)).startswith(b"HTTP/1.1 200")

    with caplog.at_level(logging.DEBUG):
        run(tmp_path, scenario)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith(("ooma_moh", "aiohttp"))]
    assert lines == ["malformed requests answered 400: 1 (BadHttpMessage 1)"], lines


def test_the_descriptor_limit_is_raised_to_what_the_caps_need(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = Limits(max_connections=1000, per_client=100, header_timeout_s=10)
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda _which, value: set_to.append(value))
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 524288))
    assert fit_descriptor_limit(limits) == limits
    assert set_to == [(limits.descriptors(), 524288)]


def test_a_hard_limit_too_low_serves_fewer_connections_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(max_connections=1000, per_client=100, header_timeout_s=10)
    monkeypatch.setattr(resource, "setrlimit", lambda _which, _value: None)
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1024))
    fitted = fit_descriptor_limit(limits)
    assert fitted.max_connections == (1024 - guard_module.SPARE_DESCRIPTORS) // 2
    assert fitted.descriptors() <= 1024
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "raise LimitNOFILE" in caplog.records[0].getMessage()


def test_an_upload_whose_client_goes_away_is_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The client leaves while the server waits for its body (aiohttp raises "Connection lost"
    into the read): answered 400 to nobody, one access line, no ERROR with a traceback."""
    world = World(tmp_path, http_listen="127.0.0.1:0")
    head = (
        f"PUT /api/v1/tenants/acme/moh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {world.acme}\r\n"
        "Content-Type: multipart/form-data; boundary=s\r\nContent-Length: 100000\r\n\r\n"
    )

    async def scenario(listening: Listening) -> None:
        for sent in ("--s\r\n", '--s\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc', ""):
            _, writer = await asyncio.open_connection("127.0.0.1", listening.port)
            writer.write((head + sent).encode())
            for _ in range(100):  # until its handler waits for the rest
                if listening.guard.busy_connections():
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            writer.close()
            for _ in range(100):
                if not listening.guard.open_connections():
                    break
                await asyncio.sleep(0.02)
        assert (await healthz(listening.port)).startswith(b"HTTP/1.1 200")

    with caplog.at_level(logging.DEBUG):
        serve(world, scenario)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], loud
    assert world.catalog.get("acme") is None and list((world.settings.home / "incoming").iterdir()) == []
