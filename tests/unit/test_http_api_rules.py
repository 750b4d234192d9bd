"""The HTTP API and the page's sign-in on in-memory fakes (ooma_moh.storage.memory,
ooma_moh.media_fake, a recorded publisher): no SQLite, no ffmpeg, no Asterisk, no root. The real
back ends are proved under the same routes in tests/integration/test_http_api.py and
test_http_lab.py; these check the API's own rules — status codes, tenant isolation, what goes
live when — in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ooma_moh.config import Settings
from ooma_moh.errors import OomaMohError
from ooma_moh.http.app import make_app
from ooma_moh.http.backend import HttpBackend
from ooma_moh.http.context import INCOMING, PUBLICATIONS
from ooma_moh.http.logins import create_login_link
from ooma_moh.http.tokens import create_token
from ooma_moh.media_fake import FakeConverter, fake_audio
from ooma_moh.media_rules import Conversion
from ooma_moh.memview import COALESCE_S, StatusMemory
from ooma_moh.model import MohSetting, TenantMoh
from ooma_moh.service import MohService
from ooma_moh.storage import BlobStore
from ooma_moh.storage.memory import MemoryCatalog

NOW = datetime.now(UTC)


class Asterisk:
    """What Asterisk reads: class -> version directory, changed only by ``publish``."""

    def __init__(self, catalog: MemoryCatalog, prefix: str) -> None:
        self.catalog, self.prefix = catalog, prefix
        self.classes: dict[str, str] = {}
        self.publications: list[str] = []
        self.failures: list[Exception] = []  # raised by the next publications, one each
        self.gate = threading.Event()  # cleared: publications wait mid-way (files written, no switch)
        self.gate.set()

    def version_dir(self, tenant: TenantMoh) -> str:
        return f"{tenant.tenant_id}/{tenant.version}"

    def published(self, classes: Collection[str] | None = None) -> dict[str, str]:
        return {c: d for c, d in self.classes.items() if classes is None or c in classes}

    def publish(self, tenant_id: str) -> None:
        self.publications.append(tenant_id)
        if self.failures:
            raise self.failures.pop(0)
        assert self.gate.wait(10)
        tenant = self.catalog.get(tenant_id)
        if tenant is None or tenant.setting is MohSetting.DEFAULT:
            self.classes.pop(self.prefix + tenant_id, None)
        else:
            self.classes[self.prefix + tenant_id] = self.version_dir(tenant)


class Nodes:
    """A cluster's registry: ``live`` of ``total`` nodes play whatever is asked."""

    def __init__(self, live: int, total: int) -> None:
        self.live, self.total = live, total

    def count(self) -> int:
        return self.total

    def live_on(self, moh_class: str, version: str | None) -> tuple[int, int]:
        return self.live, self.total

    def close(self) -> None:
        pass


class Truth:
    """A change mark over the fakes, as data_version is over the SQLite files: it moves whenever
    the catalog's tenants or credentials, or the classes Asterisk reads, change."""

    def __init__(self, catalog: MemoryCatalog, asterisk: Asterisk) -> None:
        self.catalog, self.asterisk, self.frozen = catalog, asterisk, False
        self._last: object = None

    def read(self) -> object:
        if not self.frozen:  # frozen: a notification that has not arrived yet
            with self.catalog._lock:
                state = repr((self.catalog._tenants, self.catalog._tokens, self.catalog._sessions))
            self._last = hash((state, repr(sorted(dict(self.asterisk.classes).items()))))
        return self._last

    def close(self) -> None:
        pass


class World:
    def __init__(self, tmp_path: Path, nodes: Nodes | None = None, *, memory: bool = False, **fields: Any) -> None:
        self.settings = Settings(home=tmp_path / "home", **fields)
        self.catalog = MemoryCatalog()
        self.blobs = BlobStore(self.settings.blob_dir)
        self.converter = FakeConverter()
        self.asterisk = Asterisk(self.catalog, self.settings.class_prefix)
        self.backend = HttpBackend(
            settings=self.settings,
            reader=self.catalog,
            blobs=self.blobs,
            view=self.asterisk,
            service=lambda: contextlib.nullcontext(MohService(self.settings, self.catalog, self.blobs, self.converter)),
            catalog=lambda: contextlib.nullcontext(self.catalog),
            publish=self.asterisk.publish,
            nodes=nodes,
            publish_retry_s=(60.0,),  # no retry within a test unless it says so
        )
        self.truth = Truth(self.catalog, self.asterisk)
        self.offset = 0.0  # the memory's clock: monotonic time, moved on by elsewhere()
        if memory:  # what GET …/moh read, kept until the truth's mark moves (memview.py)
            self.backend.memory = StatusMemory([self.truth], clock=lambda: time.monotonic() + self.offset)
        _, self.acme = create_token(self.catalog, tenant_id="acme", now=NOW)
        _, self.beta = create_token(self.catalog, tenant_id="beta", now=NOW)

    def elsewhere(self) -> None:
        """A change was just made behind the server's back: let the time pass after which the
        memory's contract says the next GET sees it (``COALESCE_S``)."""
        self.offset += COALESCE_S

    def run(self, scenario: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
        async def go() -> None:
            async with TestClient(TestServer(make_app(self.backend))) as client:
                await scenario(client)

        asyncio.run(go())


@pytest.fixture(params=["reads", "memory"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """Each rule with every GET reading the truth, then with the memory of memview.py."""
    yield World(tmp_path, memory=request.param == "memory")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def form(content: bytes, *, accepted: bool = True) -> aiohttp.FormData:
    data = aiohttp.FormData()
    if accepted:
        data.add_field("disclaimer", "accepted")
    data.add_field("file", io.BytesIO(content), filename="hours.mp3", content_type="audio/mpeg")
    return data


async def settled(
    client: TestClient[Any, Any], secret: str, done: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, Any]:
    """GET acme until ``done(body)`` — by default, until nothing is in progress (the publication
    runs in a worker thread)."""
    for _ in range(500):
        response = await client.get("/api/v1/tenants/acme/moh", headers=bearer(secret))
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        if done(body) if done else body["status"]["state"] not in ("converting", "publishing"):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"still {body['status']} after 5 s")


def test_an_upload_goes_live_once_and_plays_back_as_wav(world: World) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(2000)), headers=bearer(world.acme))
        assert put.status == 201, await put.text()
        created = await put.json()
        assert created["setting"] == "file" and created["file"]["duration_ms"] == 2000
        assert created["file"]["name"] == "hours.mp3" and created["status"]["state"] in ("publishing", "live")
        body = await settled(client, world.acme)
        assert body["status"] == {"state": "live", "reason": None} and body["class"] == "tenant-acme"
        audio = await client.get("/api/v1/tenants/acme/moh/audio", headers=bearer(world.acme))
        data = await audio.read()
        sln16 = world.blobs.read(world.catalog.get("acme").rendition("sln16").sha256)  # type: ignore[union-attr]
        assert audio.status == 200 and audio.content_type == "audio/wav"
        assert data[:4] == b"RIFF" and data[44:] == sln16 and len(sln16) == 64000
        part = await client.get(
            "/api/v1/tenants/acme/moh/audio", headers={**bearer(world.acme), "Range": "bytes=44-47"}
        )
        assert part.status == 206 and await part.read() == sln16[:4]
        assert part.headers["Content-Range"] == f"bytes 44-47/{44 + len(sln16)}"

    world.run(scenario)
    assert world.asterisk.publications == ["acme"] and world.converter.converted == 1


def test_a_refused_upload_changes_nothing(world: World) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert put.status == 201
        before = await settled(client, world.acme)
        refusals = [
            (form(fake_audio(500), accepted=False), 422, "disclaimer_required"),
            (form(b"MZ\x90\x00 not audio"), 415, "unrecognised_format"),
            (form(b""), 422, "empty"),
        ]
        for data, status, code in refusals:
            response = await client.put("/api/v1/tenants/acme/moh", data=data, headers=bearer(world.acme))
            assert (response.status, (await response.json())["error"]["code"]) == (status, code)
        assert await settled(client, world.acme) == before

    world.run(scenario)
    assert world.converter.converted == 1 and world.asterisk.publications == ["acme"]
    assert [e.action for e in world.catalog.audit("acme")] == ["upload"]


def test_another_tenants_token_sees_nothing_and_no_token_is_refused(world: World) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert put.status == 201
        for method, path in [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/audio")]:
            url = f"/api/v1/tenants/acme/moh{path}"
            other = await client.request(method, url, headers=bearer(world.beta))
            assert other.status == 404, (method, path)  # the same as a tenant that does not exist
            nobody = await client.request(method, url)
            assert nobody.status == 401, (method, path)
        missing = await client.get("/api/v1/tenants/beta/moh/audio", headers=bearer(world.beta))
        assert (missing.status, (await missing.json())["error"]["code"]) == (404, "no_file")

    world.run(scenario)
    tenant = world.catalog.get("acme")
    assert tenant is not None and tenant.setting is MohSetting.FILE


def test_a_deletion_returns_to_default_music_and_is_published(world: World) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert (await settled(client, world.acme))["status"]["state"] == "live"
        assert world.asterisk.classes
        deleted = await client.delete("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
        assert deleted.status == 204
        body = await settled(client, world.acme)
        assert body["setting"] == "default" and body["file"] is None and body["status"]["state"] == "live"

    world.run(scenario)
    assert world.asterisk.publications == ["acme", "acme"] and world.asterisk.classes == {}


def test_a_change_made_elsewhere_is_published_at_the_next_read(world: World) -> None:
    """golive rule 5: not live and nothing in progress -> this server publishes it."""
    with world.backend.service() as service:
        service.upload("acme", _file(world, 1500), accept_disclaimer=True, accepted_by="cli")

    async def scenario(client: TestClient[Any, Any]) -> None:
        first = await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
        assert (await first.json())["status"]["state"] == "publishing"
        assert (await settled(client, world.acme))["status"]["state"] == "live"

    world.run(scenario)
    assert world.asterisk.publications == ["acme"]


def _counting(world: World) -> dict[str, int]:
    """How often the server read the catalog for a tenant and for a token, from now on."""
    reads = {"get": 0, "token": 0}
    for name in reads:
        method = getattr(world.catalog, name)

        def counted(*args: Any, _name: str = name, _method: Any = method) -> Any:
            reads[_name] += 1
            return _method(*args)

        setattr(world.catalog, name, counted)
    return reads


def test_gets_are_answered_from_memory_until_the_truth_moves(tmp_path: Path) -> None:
    world = World(tmp_path, memory=True)

    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        live = await settled(client, world.acme)
        assert put.status == 201 and live["status"]["state"] == "live"
        world.elsewhere()  # past the coalescing: the publication's own change is seen by this GET
        assert await (await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))).json() == live
        reads = _counting(world)
        for _ in range(20):
            response = await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
            assert await response.json() == live
        assert reads == {"get": 0, "token": 0}  # neither the tenant nor the token was read again
        with world.backend.service() as service:  # the CLI, another process
            service.delete("acme")
        world.elsewhere()
        reads.update(get=0, token=0)  # the deletion's own reads aside
        moved = await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
        assert (await moved.json())["setting"] == "default" and reads["token"] == 1
        assert reads["get"] in (1, 2)  # 2: the publication that GET started (golive rule 5) read it too

    world.run(scenario)


def test_this_servers_own_changes_are_seen_at_once_before_any_mark_moves(tmp_path: Path) -> None:
    """Memview rule 5: the marks frozen (a PostgreSQL notification still on its way), an upload and
    a deletion through this server are seen by the very next GET, and their publication too."""
    world = World(tmp_path, memory=True)

    async def scenario(client: TestClient[Any, Any]) -> None:
        first = await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
        assert (await first.json())["setting"] == "default"  # kept in memory
        world.truth.frozen = True
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert put.status == 201
        after = await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
        assert (await after.json())["file"]["sha256"] == (await put.json())["file"]["sha256"]
        assert (await settled(client, world.acme))["status"]["state"] == "live"
        assert (await client.delete("/api/v1/tenants/acme/moh", headers=bearer(world.acme))).status == 204
        gone = await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
        assert (await gone.json())["setting"] == "default"
        body = await settled(client, world.acme)
        assert body["setting"] == "default" and body["status"]["state"] == "live"

    world.run(scenario)
    assert world.asterisk.classes == {}


def test_mid_publication_the_catalog_ahead_of_asterisk_never_reads_live(tmp_path: Path) -> None:
    """Issue 18's rule from memory: while the catalog names a version Asterisk does not read yet,
    no answer says live, however many GETs the memory answers; then live with that version."""
    world = World(tmp_path, memory=True)

    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        before = await settled(client, world.acme)
        assert before["status"]["state"] == "live"
        world.asterisk.gate.clear()  # the next publication stops before its switch
        with world.backend.service() as service:  # the CLI uploads a new file, without sync
            service.upload("acme", _file(world, 1500), accept_disclaimer=True, accepted_by="cli")
        world.elsewhere()
        answers = []
        for _ in range(30):
            response = await client.get("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
            answers.append(await response.json())
        assert {a["status"]["state"] for a in answers} == {"publishing"}
        assert {a["file"]["duration_ms"] for a in answers} == {1500}
        world.asterisk.gate.set()
        after = await settled(client, world.acme)
        assert after["status"]["state"] == "live" and after["file"]["duration_ms"] == 1500

    world.run(scenario)
    tenant = world.catalog.get("acme")
    assert tenant is not None and world.asterisk.classes["tenant-acme"] == world.asterisk.version_dir(tenant)


def test_in_a_cluster_the_agents_publish_and_every_node_counts(tmp_path: Path) -> None:
    nodes = Nodes(live=1, total=2)
    world = World(tmp_path, nodes)

    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert put.status == 201
        body = await settled(client, world.acme, lambda body: "nodes" in body["status"])  # this server is done
        assert body["status"]["state"] == "publishing" and body["status"]["nodes"] == {"live": 1, "of": 2}
        nodes.live = 2
        body = await settled(client, world.acme)
        assert body["status"]["state"] == "live" and body["status"]["nodes"] == {"live": 2, "of": 2}

    world.run(scenario)
    assert world.asterisk.publications == []  # not this server: the nodes' agents


def test_a_login_link_opens_a_session_once_and_the_page_acts_with_it(world: World) -> None:
    _, credential = create_login_link(world.catalog, tenant_id="acme", label="Camille", now=NOW, ttl=timedelta(hours=1))

    async def scenario(client: TestClient[Any, Any]) -> None:
        page = await client.get(f"/login/{credential}")
        assert page.status == 200 and 'id="sign-in"' in await page.text()
        signed = await client.post(f"/login/{credential}", allow_redirects=False)
        assert signed.status == 303 and signed.headers["Location"] == "/"
        again = await client.post(f"/login/{credential}", allow_redirects=False)
        assert again.status != 303  # a link works once
        home = await client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', await home.text())
        assert home.status == 200 and csrf is not None
        put = await client.put(
            "/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers={"X-CSRF-Token": csrf.group(1)}
        )
        assert put.status == 201, await put.text()
        forged = await client.delete("/api/v1/tenants/acme/moh")
        assert forged.status == 403  # a change without the session's CSRF token

    world.run(scenario)
    tenant = world.catalog.get("acme")
    assert tenant is not None and tenant.disclaimer is not None
    assert tenant.disclaimer.accepted_by.startswith("Camille")
    assert len(world.catalog.open_sign_ins(datetime.now(UTC))[1]) == 1


def _file(world: World, duration_ms: int) -> Path:
    path = world.settings.home / "upload.fake"
    path.write_bytes(fake_audio(duration_ms))
    return path


def test_a_publication_that_fails_unexpectedly_shows_error_then_is_retried(world: World) -> None:
    """Any exception, not only ours, ends as ``error`` with a reason that names no path, and the
    next request after the backoff publishes again (before: ``publishing`` until a restart)."""
    world.asterisk.failures.append(NotADirectoryError(20, "Not a directory", "/srv/secret/moh/tenant-acme"))

    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert put.status == 201
        failed = await settled(client, world.acme)
        assert failed["status"]["state"] == "error", failed
        assert "NotADirectoryError" in failed["status"]["reason"] and "/srv" not in failed["status"]["reason"]
        assert client.app is not None
        client.app[PUBLICATIONS].retry_s = (0.0,)  # as if the backoff had passed: the next read retries
        assert (await settled(client, world.acme))["status"]["state"] == "live"

    world.run(scenario)
    assert world.asterisk.publications == ["acme", "acme"]


def test_an_error_that_a_sync_from_elsewhere_resolved_reads_live(world: World) -> None:
    """The tenant's publication failed here, then a sync from the CLI published it: the state is
    read from the truth — live, not the stale error, and nothing is published again."""
    world.asterisk.failures.append(OomaMohError("the realtime database is locked"))

    async def scenario(client: TestClient[Any, Any]) -> None:
        put = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert put.status == 201
        failed = await settled(client, world.acme)
        assert failed["status"] == {"state": "error", "reason": "the realtime database is locked"}
        tenant = world.catalog.get("acme")
        assert tenant is not None
        world.asterisk.classes["tenant-acme"] = world.asterisk.version_dir(tenant)  # `ooma-moh sync acme`
        world.elsewhere()
        body = await settled(client, world.acme)
        assert body["status"] == {"state": "live", "reason": None}
        assert client.app is not None
        client.app[PUBLICATIONS].retry_s = (0.0,)  # were the error still held, this read would retry it
        assert (await settled(client, world.acme))["status"]["state"] == "live"

    world.run(scenario)
    assert world.asterisk.publications == ["acme"]  # the error was not retried: it no longer held


def test_answers_carry_the_headers_their_status_requires(world: World) -> None:
    """401 says which scheme works, 405 which methods do, 416 how long the audio is (RFC 9110)."""

    async def scenario(client: TestClient[Any, Any]) -> None:
        unauthorised = await client.get("/api/v1/tenants/acme/moh")
        assert unauthorised.status == 401 and unauthorised.headers["WWW-Authenticate"].startswith("Bearer")
        wrong_token = await client.get("/api/v1/tenants/acme/moh", headers=bearer("omh_nope"))
        assert wrong_token.status == 401 and "WWW-Authenticate" in wrong_token.headers
        not_allowed = await client.post("/api/v1/tenants/acme/moh", headers=bearer(world.acme))
        allowed = {m.strip() for m in not_allowed.headers["Allow"].split(",")}
        assert not_allowed.status == 405 and {"GET", "PUT", "DELETE"} <= allowed
        await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        size = 44 + 32000
        beyond = await client.get(
            "/api/v1/tenants/acme/moh/audio", headers={**bearer(world.acme), "Range": f"bytes={size}-"}
        )
        assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"

    world.run(scenario)


def test_the_disclaimer_is_accepted_only_in_so_many_words_and_a_file_part_is_required(world: World) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        for value in ("accepted" + " " * 56 + "not really", "accepted ", "Accepted", "acceptedx"):
            data = aiohttp.FormData()
            data.add_field("disclaimer", value)
            data.add_field("file", io.BytesIO(fake_audio(1000)), filename="a.mp3")
            refused = await client.put("/api/v1/tenants/acme/moh", data=data, headers=bearer(world.acme))
            assert refused.status == 422, value
            assert (await refused.json())["error"]["code"] == "disclaimer_required"
        no_file = aiohttp.FormData(default_to_multipart=True)  # multipart, as a form with a file input sends it
        no_file.add_field("disclaimer", "accepted")
        missing = await client.put("/api/v1/tenants/acme/moh", data=no_file, headers=bearer(world.acme))
        assert missing.status == 400 and (await missing.json())["error"]["code"] == "missing_file"

    world.run(scenario)
    assert world.catalog.get("acme") is None and world.converter.converted == 0
    assert list((world.settings.home / "incoming").iterdir()) == []  # no spool file left behind


def test_the_audio_is_checked_like_listen_and_ranges_follow_rfc_9110(world: World) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        tenant = world.catalog.get("acme")
        assert tenant is not None
        sha = tenant.rendition("sln16").sha256
        url, auth = "/api/v1/tenants/acme/moh/audio", bearer(world.acme)
        whole = await client.get(url, headers=auth)
        assert whole.status == 200 and whole.headers["ETag"] == f'"{sha}"'
        size = len(await whole.read())
        for ignored in ("bytes=5-3", "bytes=--5", "bytes=1_0-20", "bytes=+1-2", "bytes=a-b", "bytes=0-1,4-5"):
            answer = await client.get(url, headers={**auth, "Range": ignored})
            assert answer.status == 200 and len(await answer.read()) == size, ignored
        for unsatisfiable in (f"bytes={size}-", "bytes=-0"):
            assert (await client.get(url, headers={**auth, "Range": unsatisfiable})).status == 416, unsatisfiable
        same = await client.get(url, headers={**auth, "If-None-Match": f'"{sha}"'})
        assert same.status == 304
        resumed = await client.get(url, headers={**auth, "Range": "bytes=10-19", "If-Range": f'"{sha}"'})
        assert resumed.status == 206 and len(await resumed.read()) == 10
        changed = await client.get(url, headers={**auth, "Range": "bytes=10-19", "If-Range": '"an-older-file"'})
        assert changed.status == 200 and len(await changed.read()) == size  # never mixed bytes
        blob = world.blobs.path(sha)
        blob.chmod(0o644)
        blob.write_bytes(b"\x01" + blob.read_bytes()[1:])  # one byte of the stored audio damaged
        damaged = await client.get(url, headers=auth)
        assert damaged.status == 503 and (await damaged.json())["error"]["code"] == "blob_damaged"

    world.run(scenario)


def test_a_second_server_on_the_home_leaves_the_first_ones_uploads_alone(world: World) -> None:
    """Each server spools into a directory of its own; a server starting reclaims only what a dead
    one left (before: it emptied the shared spool, and the first server's upload in flight became
    'not a readable file')."""
    incoming = world.settings.home / "incoming"
    dead = incoming / "4242-1"  # a server killed mid-upload: its directory, no lock held
    dead.mkdir(parents=True)
    (dead / "tmpupload").write_bytes(b"half an upload")
    (dead / ".lock").touch()

    async def scenario(first: TestClient[Any, Any]) -> None:
        assert first.app is not None
        in_flight = first.app[INCOMING] / "tmpupload"
        in_flight.write_bytes(b"being received")
        async with TestClient(TestServer(make_app(world.backend))) as second:
            assert second.app is not None and second.app[INCOMING] != first.app[INCOMING]
            assert in_flight.read_bytes() == b"being received"  # the first server's upload is whole
            put = await second.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
            assert put.status == 201
        assert not dead.exists()  # reclaimed by the first server's start

    world.run(scenario)
    assert list(incoming.iterdir()) == []  # each server removed its own when it stopped


def test_a_basic_auth_proxy_header_does_not_hide_the_session(world: World) -> None:
    _, credential = create_login_link(world.catalog, tenant_id="acme", label="Camille", now=NOW, ttl=timedelta(hours=1))

    async def scenario(client: TestClient[Any, Any]) -> None:
        assert (await client.post(f"/login/{credential}", allow_redirects=False)).status == 303
        behind_proxy = {"Authorization": "Basic cHJveHk6cGFzcw=="}  # what a basic-auth proxy forwards
        answer = await client.get("/api/v1/tenants/acme/moh", headers=behind_proxy)
        assert answer.status == 200, await answer.text()  # was 401: any Authorization header meant a token
        assert (await client.get("/api/v1/tenants/acme/moh", headers=bearer("omh_wrong"))).status == 401

    world.run(scenario)


def test_a_token_revoked_while_its_upload_arrives_stores_nothing(world: World) -> None:
    revoked = asyncio.Event()
    boundary = "r3voke"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="disclaimer"\r\n\r\naccepted\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n'
    ).encode() + fake_audio(1000)
    tail = b"\0" * 1000 + f"\r\n--{boundary}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        await revoked.wait()  # the operator revokes the token while the rest is on its way
        yield tail

    async def scenario(client: TestClient[Any, Any]) -> None:
        headers = {**bearer(world.acme), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        upload = asyncio.ensure_future(client.put("/api/v1/tenants/acme/moh", data=body(), headers=headers))
        await asyncio.sleep(0.1)
        for token in world.catalog.tokens():
            if token.tenant_id == "acme":
                assert world.catalog.revoke_token(token.id, datetime.now(UTC))
        revoked.set()
        answer = await upload
        assert answer.status == 401, await answer.text()

    world.run(scenario)
    assert world.catalog.get("acme") is None and world.converter.converted == 0


class GatedConverter(FakeConverter):
    """Converts ``acme``'s files only once ``gate`` opens (a costly upload); others at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def convert(self, source: Path, workdir: Path) -> Conversion:
        if source.read_bytes().startswith(fake_audio(4321)):
            self.waiting.set()
            assert self.gate.wait(10)
        return super().convert(source, workdir)


def test_one_upload_per_tenant_at_once_and_other_tenants_are_not_kept_waiting(world: World) -> None:
    """While a tenant's upload is converted, its next one is refused at once with 429 and
    Retry-After (before its body is read), and another tenant's upload goes through."""
    gated = GatedConverter()
    world.converter = gated

    async def scenario(client: TestClient[Any, Any]) -> None:
        slow = asyncio.ensure_future(
            client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(4321)), headers=bearer(world.acme))
        )
        assert await asyncio.to_thread(gated.waiting.wait, 10)  # acme's conversion holds a worker
        again = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(1000)), headers=bearer(world.acme))
        assert again.status == 429 and again.headers["Retry-After"] == "5"
        assert (await again.json())["error"]["code"] == "upload_in_progress"
        other = await client.put("/api/v1/tenants/beta/moh", data=form(fake_audio(1000)), headers=bearer(world.beta))
        assert other.status == 201  # while acme's conversion still holds a worker
        gated.gate.set()
        assert (await slow).status == 201
        later = await client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(2000)), headers=bearer(world.acme))
        assert later.status == 201  # the slot is free again

    world.run(scenario)
    acme = world.catalog.get("acme")
    assert acme is not None and acme.upload is not None and acme.upload.duration_ms == 2000


def test_a_token_revoked_during_the_conversion_stores_nothing(world: World) -> None:
    """The credentials are checked again just before the commit: a revocation while ffmpeg runs
    stores nothing (before, only a revocation while the body arrived did)."""
    gated = GatedConverter()
    world.converter = gated

    async def scenario(client: TestClient[Any, Any]) -> None:
        upload = asyncio.ensure_future(
            client.put("/api/v1/tenants/acme/moh", data=form(fake_audio(4321)), headers=bearer(world.acme))
        )
        assert await asyncio.to_thread(gated.waiting.wait, 10)  # converting
        for token in world.catalog.tokens():
            if token.tenant_id == "acme":
                assert world.catalog.revoke_token(token.id, datetime.now(UTC))
        gated.gate.set()
        answer = await upload
        assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await answer.json())["error"]["code"] == "unauthorized"

    world.run(scenario)
    assert world.catalog.get("acme") is None and gated.converted == 1  # converted, never stored


def test_every_byte_of_the_body_counts_toward_its_bound(tmp_path: Path) -> None:
    """The preamble before the first part, the epilogue after the last and the number of parts
    are bounded with the parts themselves (before, only the parts' contents were counted: a
    tenant sent GBs of preamble on one connection). Chunked, so no Content-Length gives it away."""
    world = World(tmp_path, max_upload_bytes=100_000)  # the bound: 100,000 + 64 KiB of form
    boundary = "c0unt"

    def part(name: str, content: bytes, filename: str = "") -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"

    parts = part("disclaimer", b"accepted") + part("file", fake_audio(1000), "a.mp3")
    end = f"--{boundary}--\r\n".encode()
    bodies = {
        "preamble": b"ignore me\r\n" * 30_000 + parts + end,
        "epilogue": parts + end + b"after the end\r\n" * 30_000,
        "parts": b"".join(part(f"field{i}", b"x") for i in range(20)) + parts + end,
    }

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    async def scenario(client: TestClient[Any, Any]) -> None:
        headers = {**bearer(world.acme), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        for name, data in bodies.items():
            answer = await client.put("/api/v1/tenants/acme/moh", data=chunks(data), headers=headers)
            assert answer.status == 413, (name, answer.status, await answer.text())
        fine = await client.put("/api/v1/tenants/acme/moh", data=chunks(parts + end), headers=headers)
        assert fine.status == 201, await fine.text()

    world.run(scenario)
    assert world.converter.converted == 1
