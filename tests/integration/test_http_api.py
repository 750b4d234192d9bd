"""The tenant admin HTTP API against a real server on loopback, real ffmpeg, real SQLite, and
realtime publication (no Asterisk needed to see a class published; test_http_lab.py listens)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from ooma_moh.app import build_service, build_syncer, open_catalog, service_session
from ooma_moh.cli import main
from ooma_moh.config import Settings, settings_environ
from ooma_moh.credentials import ApiToken
from ooma_moh.http.context import BACKEND, PUBLICATIONS
from ooma_moh.http.server import start_http
from ooma_moh.memview import STALE_S
from tests.audio import tone
from tests.integration.conftest import spooled

GOOD = 440.0
T = TypeVar("T")
#: The ``home`` fixture (tests/integration/conftest.py): settings with a catalog, an operator
#: token, a good MP3.
Home = tuple[Settings, str, bytes]


def cli(settings: Settings, *args: str, code: int = 0) -> str:
    env = {"OOMA_MOH_DATABASE_URL": settings.database_url}  # the same catalog back end
    result = CliRunner().invoke(main, ["--home", str(settings.home), *args], catch_exceptions=False, env=env)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout


def new_token(settings: Settings, *args: str) -> str:
    return cli(settings, "tokens", "create", *args).strip().splitlines()[-1]


@dataclasses.dataclass
class Api:
    """A running server and a client session with a token."""

    session: aiohttp.ClientSession
    port: int
    settings: Settings
    app: web.Application

    def url(self, tenant: str, tail: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/tenants/{tenant}/moh{tail}"

    async def put(
        self,
        tenant: str,
        data: bytes,
        *,
        name: str = "hold.mp3",
        disclaimer: str | None = "accepted",
        token: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename=name, content_type="application/octet-stream")
        if disclaimer is not None:
            form.add_field("disclaimer", disclaimer)
        async with self.session.put(self.url(tenant), data=form, headers=auth(token)) as r:
            return r.status, await r.json()

    async def get(self, tenant: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.url(tenant), headers=auth(token)) as r:
            return r.status, await r.json()

    async def wait_live(self, tenant: str, within_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            status, body = await self.get(tenant)
            assert status == 200, body
            if body["status"]["state"] in ("live", "error"):
                return body
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)


def auth(token: str | None) -> dict[str, str]:
    """Headers for ``token``; None: the session's own; "": no credentials at all."""
    if token is None:
        return {}
    return {"Authorization": f"Bearer {token}" if token else ""}


@contextlib.asynccontextmanager
async def api(settings: Settings, token: str) -> AsyncIterator[Api]:
    listening = await start_http(dataclasses.replace(settings, http_listen="127.0.0.1:0"))
    port = listening.port
    try:
        async with aiohttp.ClientSession(headers=auth(token)) as session:
            yield Api(session, port, settings, listening.runner.app)
    finally:
        await listening.stop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def published(settings: Settings) -> dict[str, str]:
    service = build_service(settings, writable=False)
    try:
        return build_syncer(settings, service).published()
    finally:
        service.catalog.close()


def test_upload_goes_live_without_sync_then_delete(home: Home) -> None:
    settings, token, good = home

    async def scenario() -> None:
        async with api(settings, token) as client:
            status, body = await client.put("acme", good)
            assert status == 201, body
            assert body["setting"] == "file" and body["class"] == "tenant-acme"
            assert body["file"]["name"] == "hold.mp3" and body["file"]["size"] == len(good)
            assert body["disclaimer"]["accepted_by"].startswith("api token ")
            assert body["status"]["state"] in ("publishing", "live")
            live = await client.wait_live("acme")
            assert live["status"] == {"state": "live", "reason": None}
            rows = published(settings)
            with service_session(settings, writable=False) as service:
                assert rows["tenant-acme"].endswith(service.show("acme").version)
            async with client.session.delete(client.url("acme")) as r:
                assert r.status == 204
            gone = await client.wait_live("acme")
            assert gone["setting"] == "default" and gone["file"] is None and gone["class"] == "default"
            assert "tenant-acme" not in published(settings)

    run(scenario())


def test_audio_with_ranges(home: Home) -> None:
    settings, token, good = home

    async def scenario() -> None:
        async with api(settings, token) as client:
            assert (await client.put("acme", good))[0] == 201
            async with client.session.get(client.url("acme", "/audio")) as r:
                whole = await r.read()
                assert r.status == 200 and r.content_type == "audio/wav" and r.headers["Accept-Ranges"] == "bytes"
            assert whole[:4] == b"RIFF" and len(whole) == 44 + 2.75 * 32000  # 3 s - the loop crossfade
            for spec, expected in (
                ("bytes=0-99", whole[:100]),
                ("bytes=-10", whole[-10:]),
                ("bytes=40-", whole[40:]),
                ("bytes=50000-50009", whole[50000:50010]),
            ):
                async with client.session.get(client.url("acme", "/audio"), headers={"Range": spec}) as r:
                    assert r.status == 206, spec
                    assert await r.read() == expected, spec
                    assert r.headers["Content-Range"].endswith(f"/{len(whole)}")
            async with client.session.get(client.url("acme", "/audio"), headers={"Range": "bytes=999999-"}) as r:
                assert r.status == 416
            async with client.session.get(client.url("other", "/audio")) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "no_file"

    run(scenario())


def test_tokens_scope_and_revocation(home: Home) -> None:
    settings, operator, good = home
    acme = new_token(settings, "--tenant", "acme")

    async def scenario() -> None:
        async with api(settings, operator) as client:
            assert (await client.put("other", good))[0] == 201
            for bad in (None, "nonsense", "omh_00000000_" + "x" * 43, acme[:-1] + ("A" if acme[-1] != "A" else "B")):
                status, body = await client.get("acme", token=bad if bad is not None else "")
                assert status == 401 and body["error"]["code"] == "unauthorized", bad
            assert (await client.get("acme", token=acme))[0] == 200
            # another tenant's resources, existing or not: 404, the same answer
            for tenant in ("other", "never-seen", "a%0ab"):
                status, body = await client.get(tenant, token=acme)
                assert status == 404 and body == {"error": {"code": "not_found", "message": "no such tenant"}}
            assert (await client.put("other", good, token=acme))[0] == 404
            acme_id = acme.split("_")[1]
            assert "revoked" in cli(settings, "tokens", "revoke", acme_id)
            assert (await client.get("acme", token=acme))[0] == 401

    run(scenario())
    listing = json.loads(cli(settings, "tokens", "list", "--json"))
    assert {t["scope"] for t in listing} == {"operator", "tenant"}
    assert all("token" not in t for t in listing)
    catalog = open_catalog(settings, writable=False)
    # each id comes from tokens(): token() finds it
    assert all(
        len(cast(tuple[ApiToken, str], catalog.token(t.id))[1]) == 64 for t in catalog.tokens()
    )  # only a sha256 is stored
    catalog.close()


def _chunked(total: int) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        boundary = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.mp3"\r\n\r\n'
        yield boundary
        sent = 0
        while sent < total:
            yield b"\xff" * 65536
            sent += 65536
        yield b"\r\n--XyZ--\r\n"

    return body()


@pytest.mark.parametrize(
    "case",
    [
        "content-length over the cap",
        "chunked over the cap",
        "no disclaimer",
        "disclaimer not accepted",
        "text file",
        "0.5 s",
        "not multipart",
        "broken multipart",
    ],
)
def test_each_refusal_leaves_the_music_as_it_was(home: Home, tmp_path: Path, case: str) -> None:
    settings, token, good = home
    expected = {
        "content-length over the cap": (413, "too_large"),
        "chunked over the cap": (413, "too_large"),
        "no disclaimer": (422, "disclaimer_required"),
        "disclaimer not accepted": (422, "disclaimer_required"),
        "text file": (415, "unrecognised_format"),
        "0.5 s": (422, "too_short"),
        "not multipart": (400, "malformed_multipart"),
        "broken multipart": (400, "malformed_multipart"),
    }[case]

    async def scenario() -> None:
        async with api(settings, token) as client:
            assert (await client.put("acme", good))[0] == 201
            before = await client.wait_live("acme")
            url = client.url("acme")
            if case == "content-length over the cap":
                status, body = await client.put("acme", b"\xff" * (5 * 1024 * 1024 + 70_000))
            elif case == "chunked over the cap":
                headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
                async with client.session.put(url, data=_chunked(20 * 1024 * 1024), headers=headers) as r:
                    status, body = r.status, await r.json()
            elif case == "no disclaimer":
                status, body = await client.put("acme", good, disclaimer=None)
            elif case == "disclaimer not accepted":
                status, body = await client.put("acme", good, disclaimer="no")
            elif case == "text file":
                status, body = await client.put("acme", b"hello, I am not audio\n" * 50)
            elif case == "0.5 s":
                status, body = await client.put("acme", tone(tmp_path / "short.wav", GOOD, 0.5).read_bytes())
            elif case == "not multipart":
                async with client.session.put(url, data=b"raw", headers={"Content-Type": "audio/mpeg"}) as r:
                    status, body = r.status, await r.json()
            else:
                headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
                async with client.session.put(url, data=b"--XyZ\r\nno headers end", headers=headers) as r:
                    status, body = r.status, await r.json()
            assert (status, body["error"]["code"]) == expected, body
            assert body["error"]["message"] and str(settings.home) not in body["error"]["message"]
            after = await client.wait_live("acme")
            assert after == before
        assert spooled(settings.home) == []

    run(scenario())


def test_openapi_document_is_valid(home: Home) -> None:
    from openapi_spec_validator import validate

    settings, token, _ = home

    async def scenario() -> dict[str, Any]:
        async with (
            api(settings, token) as client,
            client.session.get(f"http://127.0.0.1:{client.port}/api/v1/openapi.json") as r,
        ):
            assert r.status == 200
            return cast(dict[str, Any], await r.json())  # a JSON object

    document = run(scenario())
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_twenty_tenants_at_once_and_two_uploads_for_one(home: Home, tmp_path: Path) -> None:
    settings, token, good = home
    other = tone(tmp_path / "other.mp3", 660.0, 3, "mp3").read_bytes()

    async def scenario() -> None:
        async with api(settings, token) as client:
            results = await asyncio.gather(*(client.put(f"t{i:02d}", good) for i in range(20)))
            assert [s for s, _ in results] == [201] * 20, results
            pair = await asyncio.gather(client.put("same", good), client.put("same", other))
            # one tenant, one upload at a time: whichever arrives second is refused, not queued
            assert sorted(s for s, _ in pair) == [201, 429], pair
            stored = [b for s, b in pair if s == 201]
            for i in range(20):
                assert (await client.wait_live(f"t{i:02d}"))["status"]["state"] == "live"
            final = await client.wait_live("same")
            assert final["status"]["state"] == "live"
            assert final["file"]["sha256"] == stored[0]["file"]["sha256"]
            service = build_service(settings, writable=False)
            tenant = service.show("same")
            assert published(settings)["tenant-same"] == build_syncer(settings, service).version_dir(tenant)
            assert build_syncer(settings, service).on_disk("tenant-same", tenant)
            service.catalog.close()

    run(scenario())


def test_slow_client_is_timed_out_without_blocking_others(home: Home) -> None:
    settings, token, good = home
    settings = dataclasses.replace(settings, http_body_timeout_s=1.0)

    async def scenario() -> None:
        async with api(settings, token) as client:
            assert (await client.put("acme", good))[0] == 201
            slow = socket.create_connection(("127.0.0.1", client.port))
            slow.sendall(
                (
                    f"PUT /api/v1/tenants/acme/moh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                    "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n"
                    '--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc'
                ).encode()
            )
            started = time.monotonic()
            for _ in range(10):  # others are served meanwhile
                assert (await client.get("acme"))[0] == 200
            assert time.monotonic() - started < 1.0
            slow.settimeout(10)
            answer = await asyncio.get_running_loop().run_in_executor(None, slow.recv, 4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            slow.close()

    run(scenario())


def test_serve_http_refuses_a_home_without_catalog(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "typo"), "serve", "http"])
    assert result.exit_code == 1 and "no catalog" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_healthz(home: Home) -> None:
    settings, token, _ = home

    async def scenario() -> None:
        async with (
            api(settings, token) as client,
            client.session.get(f"http://127.0.0.1:{client.port}/healthz", headers={}) as r,
        ):
            assert r.status == 200 and await r.json() == {"status": "ok"}

    run(scenario())


def remembered(client: Api, tenant: str) -> object:
    """What the server's memory (memview.py) holds for ``tenant`` now, if still valid."""
    memory = client.app[BACKEND].memory
    assert memory is not None
    return memory.recall(tenant, client.app[PUBLICATIONS].changes(tenant))


def test_a_change_by_another_process_is_seen_by_the_next_get(home: Home) -> None:
    """The status from memory, on real SQLite (data_version) and PostgreSQL (LISTEN): the CLI's
    change is seen by the next GET — at once on SQLite, within the listener's 100 ms on
    PostgreSQL — and a change through the API by the very next GET."""
    settings, token, good = home

    async def scenario() -> None:
        async with api(settings, token) as client:
            put_status, put = await client.put("acme", good)
            assert put_status == 201
            assert (await client.get("acme"))[1]["file"]["sha256"] == put["file"]["sha256"]  # at once
            live = await client.wait_live("acme")
            assert (await client.get("acme"))[1] == live
            assert remembered(client, "acme") is not None  # answered from memory
            await asyncio.to_thread(cli_process, settings, "delete", "acme")  # another process
            if settings.database_url:
                await asyncio.sleep(STALE_S)  # the bound: a listener turn started after the commit
            status, body = await client.get("acme")
            assert status == 200 and body["setting"] == "default" and body["file"] is None
            assert body["status"]["state"] in ("publishing", "live")  # this server publishes it
            assert (await client.wait_live("acme"))["setting"] == "default"
            async with client.session.delete(client.url("acme")) as r:  # through the API: at once
                assert r.status == 204
            assert (await client.put("acme", good))[0] == 201
            assert (await client.get("acme"))[1]["setting"] == "file"

    run(scenario())


def test_the_catalog_ahead_of_asterisk_mid_publication_never_shows_live(home: Home, tmp_path: Path) -> None:
    """Issue 18's rule from memory: the CLI uploads a new file while this server's publication is
    held before its switch (the sync lock taken): every GET says publishing with the new file, none
    says live; released, live with the new version, the one the realtime database names."""
    settings, token, good = home
    other = tone(tmp_path / "other.mp3", 660.0, 3, "mp3")

    async def scenario() -> None:
        async with api(settings, token) as client:
            assert (await client.put("acme", good))[0] == 201
            assert (await client.wait_live("acme"))["status"]["state"] == "live"
            with sync_lock_held(settings):  # as a long sync from the CLI would
                await asyncio.to_thread(cli_process, settings, "upload", "acme", str(other), "--accept-disclaimer")
                if settings.database_url:
                    await asyncio.sleep(STALE_S)
                answers = [(await client.get("acme"))[1] for _ in range(30)]
            assert {a["status"]["state"] for a in answers} == {"publishing"}, answers[0]["status"]
            assert len({a["file"]["sha256"] for a in answers}) == 1 and answers[0]["file"]["name"] == "other.mp3"
            after = await client.wait_live("acme")
            assert after["status"]["state"] == "live" and after["file"]["sha256"] == answers[0]["file"]["sha256"]
            with service_session(settings, writable=False) as service:
                assert published(settings)["tenant-acme"].endswith(service.show("acme").version)

    run(scenario())


@contextlib.contextmanager
def sync_lock_held(settings: Settings) -> Iterator[None]:
    """The home's sync lock, held: this server's publications wait before their first step."""
    with open(settings.home / "sync.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cli_process(settings: Settings, *args: str) -> None:
    """``ooma-moh ARGS`` in a process of its own, on the same home and catalog."""
    env = {**os.environ, **settings_environ(settings)}
    subprocess.run([sys.executable, "-m", "ooma_moh", *args], env=env, check=True, capture_output=True)
