"""Hostile requests against "call my phone" and the hold statistics on a real ``serve http`` on
loopback (docs/security.md, "Hold statistics and test calls"). Its ARI is out of reach here:
what is checked is what the server does before it dials (tests/integration/test_http_testcall.py
dials the lab Asterisk)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ooma_moh.ari import testcall as ari_testcall
from ooma_moh.config import Settings
from ooma_moh.http.server import start_http
from tests.integration.test_http_api import cli, new_token
from tests.integration.test_http_login import Browserish, browse, link

BASE = "/api/v1/tenants/acme"


@pytest.fixture
def home(settings: Settings, tmp_path: Path) -> tuple[Settings, str]:
    """A home whose acme has one endpoint (beta another), an acme token; ARI nowhere."""
    settings = dataclasses.replace(settings, ari_url="http://127.0.0.1:9")  # the discard port: refused
    cli(settings, "init")
    cli(settings, "endpoints", "set", "PJSIP/acme-100", "acme")
    cli(settings, "endpoints", "set", "PJSIP/beta-100", "beta")
    return settings, new_token(settings, "--tenant", "acme")


async def raw_post(port: int, token: str, packets: list[bytes], length: int) -> tuple[int, bytes]:
    """``POST …/moh/test-call`` by hand: the headers, then the body in ``packets`` sent apart."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {BASE}/moh/test-call HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    for packet in packets:
        writer.write(packet)
        await writer.drain()
        await asyncio.sleep(0.05)  # apart: the server reads what has arrived (the answer waits for it all)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_a_body_is_read_whole_however_it_arrives(home: tuple[Settings, str]) -> None:
    """A body in two packets was refused 400 (only the first was read); a 5 KB body whose first
    packet is a whole JSON object was accepted (the rest never read)."""
    settings, token = home

    async def scenario() -> None:
        listening = await start_http(dataclasses.replace(settings, http_listen="127.0.0.1:0"))
        try:
            body = b'{"endpoint": "PJSIP/beta-100"}'  # beta's: 404 once the body is read
            status, answer = await raw_post(listening.port, token, [body[:11], body[11:]], len(body))
            assert (status, b"no_endpoint" in answer) == (404, True), answer
            padded = body + b" " * 5000
            status, answer = await raw_post(listening.port, token, [body, padded[len(body) :]], len(padded))
            assert (status, b"invalid_test_call" in answer) == (400, True), answer
        finally:
            await listening.stop()

    asyncio.run(scenario())


def test_many_posts_at_once_for_one_tenant_dial_once(
    home: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Twelve POSTs raced on one tenant: one goes to ARI (here 503: out of reach, not counted),
    the eleven others are 429 ``test_call_in_progress`` meanwhile."""
    settings, token = home
    monkeypatch.setattr(ari_testcall, "CONNECT_S", 3.0)  # the others all arrive meanwhile
    caplog.set_level(logging.INFO, logger="ooma_moh")

    async def scenario() -> list[tuple[int, str]]:
        listening = await start_http(dataclasses.replace(settings, http_listen="127.0.0.1:0"))
        url = f"http://127.0.0.1:{listening.port}{BASE}/moh/test-call"
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:

                async def post() -> tuple[int, str]:
                    async with session.post(url, json={"endpoint": "PJSIP/acme-100"}) as r:
                        return r.status, (await r.json())["error"]["code"]

                return await asyncio.gather(*(post() for _ in range(12)))
        finally:
            await listening.stop()

    answers = asyncio.run(scenario())
    assert sorted(answers) == [(429, "test_call_in_progress")] * 11 + [(503, "ari_unavailable")], answers
    tried = [r.getMessage() for r in caplog.records if "not placed" in r.getMessage()]
    assert len(tried) == 1, tried


def test_a_session_needs_its_csrf_token_to_place_a_test_call(
    home: tuple[Settings, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A page of another site posting with the admin's cookie: 403, nothing dialled; reading the
    statistics and the endpoints needs no token."""
    settings, _ = home
    url = link(settings, "acme")
    caplog.set_level(logging.INFO, logger="ooma_moh")

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        _, html, _ = await b.page("/")
        csrf = b.csrf(html)
        call = b.api(tail="/test-call")
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}):
            async with b.session.post(call, json={"endpoint": "PJSIP/acme-100"}, headers=headers) as r:
                assert (r.status, (await r.json())["error"]["code"]) == (403, "csrf_required"), headers
        async with b.session.post(
            call, json={"endpoint": "PJSIP/beta-100"}, headers={"X-CSRF-Token": csrf, "Origin": b.base}
        ) as r:
            assert r.status == 404  # with its token the request goes on, to the endpoint's check
        async with b.session.get(b.api(tail="/stats?days=1")) as r:
            assert r.status == 200 and len((await r.json())["days"]) == 1
        async with b.session.get(f"{b.base}/api/v1/tenants/beta/moh/stats") as r:
            assert r.status == 404

    browse(settings, scenario)
    assert not [r for r in caplog.records if r.getMessage().startswith("test-call")]  # nothing dialled


def test_a_test_call_id_is_only_ever_looked_up(home: tuple[Settings, str], caplog: pytest.LogCaptureFixture) -> None:
    """A made-up call id, a path climbing out, a newline: 404 ``no_test_call`` (another tenant's
    call: tests/unit/test_testcall_rules.py), logged on one line; a 10 KB one: 400 before any route."""
    settings, token = home
    caplog.set_level(logging.INFO, logger="ooma_moh")

    async def scenario() -> list[tuple[int, Any]]:
        listening = await start_http(dataclasses.replace(settings, http_listen="127.0.0.1:0"))
        base = f"http://127.0.0.1:{listening.port}{BASE}/moh/test-call/"
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
                answers = []
                for call in ("0123456789abcdef", "..%2F..%2Fstats", "x" * 10_000, "%0aFORGED"):
                    async with session.get(base + call) as r:
                        answers.append((r.status, (await r.json())["error"]["code"]))
                return answers
        finally:
            await listening.stop()

    answers = asyncio.run(scenario())
    assert answers == [(404, "no_test_call")] * 2 + [(400, "malformed_request"), (404, "no_test_call")], answers
    lines = [r.getMessage() for r in caplog.records if "FORGED" in r.getMessage()]
    assert lines and all("\n" not in line and "\\nFORGED" in line for line in lines), lines
