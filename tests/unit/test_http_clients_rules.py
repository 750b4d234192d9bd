"""Ordinary, unlucky clients against the API on in-memory fakes: a browser that stops reading the
audio (every seek does), an upload the client abandons, a body that is not the gzip its header
says, a sign-out with a malformed form. Each is answered 4xx or not at all, and logged as at most
one INFO line — never 500, never an ERROR with a traceback (issue 23, item 6)."""

from __future__ import annotations

import asyncio
import gzip
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ooma_moh.http.logins import create_login_link
from ooma_moh.media_fake import fake_audio
from tests.unit.test_http_api_rules import NOW, World, bearer, form


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [(r.name, r.levelname, r.getMessage()) for r in loud]


async def raw(client: TestClient[Any, Any], head: bytes, body: bytes = b"", *, read: bool = True) -> bytes:
    """Send ``head`` + ``body`` on a socket of our own; the answer's first bytes, or nothing."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(200), 10) if read else b""
    finally:
        writer.close()


def test_a_listener_that_stops_reading_the_audio_is_not_an_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(600_000)), headers=bearer(world.acme))
        assert put.status == 201  # 10 min: 19 MB of audio, far more than the sockets buffer
        for _ in range(3):
            head = (
                f"GET /api/v1/tenants/acme/moh/audio HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {world.acme}\r\n\r\n"
            )
            assert (await raw(client, head.encode())).startswith(b"HTTP/1.1 200")  # then the browser seeks away
        await asyncio.sleep(0.3)  # the server's writes into the closed connections fail now
        assert (await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))).status == 200

    with caplog.at_level(logging.DEBUG):
        world.run(scenario)
    no_errors(caplog)


def test_an_abandoned_upload_and_a_false_gzip_are_not_errors(world: World, caplog: pytest.LogCaptureFixture) -> None:
    boundary = "b0undary"
    part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="disclaimer"\r\n\r\naccepted\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n'
        ).encode()
        + fake_audio(1000)
        + b"\0" * 200_000
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def head(length: int, extra: str = "") -> bytes:
        return (
            f"PUT /api/v1/tenants/acme/moh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {world.acme}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n{extra}\r\n"
        ).encode()

    async def scenario(client: TestClient[Any, Any]) -> None:
        await raw(client, head(len(part)), part[: len(part) // 3], read=False)  # the client gives up
        for sent in (part[:10], b""):  # gone while the server waits for the first part's headers
            assert client.server.port is not None
            _, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
            writer.write(head(len(part)) + sent)
            await asyncio.sleep(0.2)
            writer.close()
        lied = await raw(client, head(len(part), "Content-Encoding: gzip\r\n"), part)
        assert lied.startswith(b"HTTP/1.1 400"), lied
        zipped = gzip.compress(b"not multipart at all")
        assert (await raw(client, head(len(zipped), "Content-Encoding: gzip\r\n"), zipped)).startswith(b"HTTP/1.1 400")
        await asyncio.sleep(0.3)
        assert (await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))).status == 200

    with caplog.at_level(logging.DEBUG):
        world.run(scenario)
    no_errors(caplog)
    assert world.catalog.get("acme") is None
    assert list((world.settings.home / "incoming").iterdir()) == []


def test_a_sign_out_with_a_malformed_form_is_refused_quietly(world: World, caplog: pytest.LogCaptureFixture) -> None:
    _, credential = create_login_link(world.catalog, tenant_id="acme", label="Camille", now=NOW, ttl=timedelta(hours=1))

    async def scenario(client: TestClient[Any, Any]) -> None:
        assert (await client.post(f"/login/{credential}", allow_redirects=False)).status == 303
        broken = await client.post(
            "/logout", data=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data"}
        )  # no boundary
        assert broken.status == 400 and "text/html" in broken.headers["Content-Type"]
        assert (await client.get("/")).status == 200  # still signed in: nothing was ended

    with caplog.at_level(logging.DEBUG):
        world.run(scenario)
    no_errors(caplog)


def test_the_pages_routes_answer_errors_as_pages(world: World) -> None:
    """A browser shown raw JSON is lost: the sign-in, sign-out and page routes answer their errors
    as a page in the admin's language, with the headers the status needs."""

    async def scenario(client: TestClient[Any, Any]) -> None:
        for method, path, status in (
            ("GET", "/login/abc/", 404),  # a trailing slash a mail client added
            ("PUT", "/logout", 405),
            ("GET", "/nothing-here", 404),
        ):
            answer = await client.request(method, path, headers={"Accept-Language": "en"})
            assert answer.status == status, (method, path)
            assert answer.content_type == "text/html", (method, path)
            assert "Music on hold" in await answer.text()
            if status == 405:
                assert "POST" in answer.headers["Allow"]
        api = await client.get("/api/v1/tenants/acme/moh")
        assert api.status == 401 and api.content_type == "application/json"  # the API stays JSON

    world.run(scenario)


def test_malformed_requests_are_counted_not_logged_one_by_one(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp logs each request it cannot parse at ERROR with a traceback (anyone could fill the
    log); while the server runs they are counted and said in one INFO line."""
    malformed = [
        b"GET / HTTP/1.1\r\nHost: x\r\nNo colon in this header\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /api/v1/tenants/acme/moh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n",
        b"PUT /api/v1/tenants/acme/moh HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc",
    ]

    async def scenario(client: TestClient[Any, Any]) -> None:
        for request in malformed:
            assert (await raw(client, request)).startswith(b"HTTP/1.0 400"), request[:40]

    with caplog.at_level(logging.DEBUG):
        world.run(scenario)
    no_errors(caplog)
    said = [r.getMessage() for r in caplog.records if r.name == "ooma_moh.http.quiet"]
    assert len(said) == 1 and said[0].startswith(f"malformed requests answered 400: {len(malformed)} ("), said
