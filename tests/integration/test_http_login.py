"""Browser sign-in over real HTTP: one-time login links, the session cookie, CSRF, logout, the
page's HTML and headers, and the disclaimer's text version (real server, real SQLite, ffmpeg)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from click.testing import CliRunner

from ooma_moh import disclaimer
from ooma_moh.app import open_catalog
from ooma_moh.cli import main
from ooma_moh.config import Settings, settings_environ
from ooma_moh.http.logins import COOKIE, create_login_link
from ooma_moh.http.server import start_http
from ooma_moh.service import utcnow
from tests.audio import tone
from tests.integration.test_http_api import cli, new_token

GOOD = 440.0
#: The ``home`` fixture: settings with a catalog, a good MP3.
Home = tuple[Settings, bytes]


def link(settings: Settings, tenant: str = "acme", *extra: str) -> str:
    return cli(settings, "tokens", "link", "--tenant", tenant, *extra).strip().splitlines()[-1]


@pytest.fixture
def home(settings: Settings, tmp_path: Path) -> Home:
    cli(settings, "init")
    return settings, tone(tmp_path / "good.mp3", GOOD, 3, "mp3").read_bytes()


class Browserish:
    """An aiohttp client that keeps cookies like a browser does, against a real server."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session, self.port = session, port
        self.base = f"http://127.0.0.1:{port}"

    def local(self, url: str) -> str:
        """A link printed for the public URL, pointed at this test's server."""
        return self.base + url[url.index("/login/") :]

    async def sign_in(self, url: str) -> aiohttp.ClientResponse:
        async with self.session.post(self.local(url), allow_redirects=False) as r:
            await r.read()
            return r

    async def page(self, path: str = "/", **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, headers=headers) as r:
            return r.status, await r.text(), r

    def csrf(self, html: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', html)
        assert match, html
        return match.group(1)

    def api(self, tenant: str = "acme", tail: str = "") -> str:
        return f"{self.base}/api/v1/tenants/{tenant}/moh{tail}"

    async def put(
        self, data: bytes, csrf: str | None, *, tenant: str = "acme", version: str | None = None, **headers: str
    ) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename="hold.mp3", content_type="application/octet-stream")
        form.add_field("disclaimer", "accepted")
        if version is not None:
            form.add_field("disclaimer_version", version)
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        async with self.session.put(self.api(tenant), data=form, headers=headers) as r:
            return r.status, await r.json()

    async def music(self, tenant: str = "acme") -> dict[str, Any]:
        """The tenant's body without its status (which moves on by itself)."""
        status, body = await self.get(tenant)
        assert status == 200, body
        body.pop("status")
        return body

    async def get(self, tenant: str = "acme") -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.api(tenant)) as r:
            return r.status, await r.json()


def browse(settings: Settings, scenario: Callable[[Browserish], Awaitable[None]]) -> None:
    async def main() -> None:
        listening = await start_http(dataclasses.replace(settings, http_listen="127.0.0.1:0"))
        port = listening.port
        try:
            jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, as a browser keeps them
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                await scenario(Browserish(session, port))
        finally:
            await listening.stop()

    asyncio.run(main())


def test_link_signs_in_once_with_a_strict_httponly_cookie(home: Home, caplog: pytest.LogCaptureFixture) -> None:
    settings, _ = home
    url = link(settings, "acme", "--by", "Alice Martin")
    assert url.startswith(settings.public_url + "/login/"), url
    secret = url.rsplit("/", 1)[1]

    async def scenario(b: Browserish) -> None:
        for _ in range(2):  # opening the link (a mail scanner, a preview) does not spend it
            async with b.session.get(b.local(url)) as r:
                assert r.status == 200 and 'id="sign-in"' in await r.text()
                assert r.headers["Referrer-Policy"] == "same-origin" and "Set-Cookie" not in r.headers
        response = await b.sign_in(url)
        assert response.status == 303 and response.headers["Location"] == "/"
        cookie = response.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert not cookie["secure"]  # http:// public URL; https:// makes it Secure (next test)
        status, html, _ = await b.page()
        assert status == 200 and "Musique d&#x27;attente" in html
        status, body = await b.get()
        assert status == 200 and body["setting"] == "default"
        # the same link again, from another browser: a clear page, no session
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            async with other.post(b.local(url), allow_redirects=False) as r:
                assert r.status == 410 and "déjà servi" in await r.text()
                assert COOKIE not in r.cookies
            async with other.get(b.local(url)) as r:
                assert r.status == 410
            async with other.get(b.api()) as r:
                assert r.status == 401

    with caplog.at_level(logging.INFO, logger="ooma_moh.http.server"):
        browse(settings, scenario)
    assert "POST /login/... 303" in caplog.text and secret not in caplog.text


def test_expired_unknown_and_malformed_links_open_nothing(home: Home) -> None:
    settings, _ = home
    with contextlib.closing(open_catalog(settings)) as catalog:
        _, old = create_login_link(
            catalog, tenant_id="acme", label="x", now=utcnow() - timedelta(minutes=16), ttl=timedelta(minutes=15)
        )
    good = link(settings)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")

    async def scenario(b: Browserish) -> None:
        for credential, status, words in (
            (old, 410, "expiré"),
            (forged.rsplit("/", 1)[1], 404, "pas valable"),
            ("nonsense", 404, "pas valable"),
            ("../../etc", 404, None),
        ):
            response = await b.sign_in(f"/login/{credential}")
            assert response.status == status, credential
            assert COOKIE not in response.cookies
            if words:
                async with b.session.get(b.local(f"/login/{credential}"), headers={"Accept-Language": "fr"}) as r:
                    assert words in await r.text()
        status, _, _ = await b.page()
        assert status == 401
        response = await b.sign_in(good)  # the forged variant did not spend the real link
        assert response.status == 303

    browse(settings, scenario)


def test_two_sign_ins_with_one_link_at_once_open_one_session(home: Home) -> None:
    settings, _ = home
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        async def attempt() -> int:
            async with aiohttp.ClientSession() as s, s.post(b.local(url), allow_redirects=False) as r:
                return r.status

        statuses = await asyncio.gather(*(attempt() for _ in range(8)))
        assert sorted(statuses) == [303] + [410] * 7, statuses

    browse(settings, scenario)
    with contextlib.closing(open_catalog(settings, writable=False)) as catalog:
        assert len(catalog.open_sign_ins(utcnow())[1]) == 1


def test_changes_need_the_csrf_token_and_leave_the_music_alone(home: Home) -> None:
    settings, good = home
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        _, html, _ = await b.page()
        csrf = b.csrf(html)
        status, body = await b.put(good, csrf)
        assert status == 201 and body["disclaimer"]["accepted_by"].startswith("tenant admin (login link ")
        assert body["disclaimer"]["text_version"] == disclaimer.VERSION
        before = await b.music()
        for token, extra in ((None, {}), ("wrong", {}), (csrf, {"Origin": "https://evil.example"})):
            status, body = await b.put(good[:-1000], token, **extra)
            assert status == 403 and body["error"]["code"] == "csrf_required", (token, extra, body)
            headers = {"X-CSRF-Token": token} if token else {}
            async with b.session.delete(b.api(), headers={**headers, **extra}) as r:
                assert r.status == 403
        status, body = await b.put(good, csrf, version="1999-01-01")  # the page showed an older text
        assert status == 409 and body["error"]["code"] == "disclaimer_changed"
        assert await b.music() == before
        status, body = await b.get("other")  # a session sees only its own tenant
        assert status == 404 and body["error"]["code"] == "not_found"
        async with b.session.delete(b.api(), headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 204

    browse(settings, scenario)


def test_logout_ends_the_session_for_good(home: Home) -> None:
    settings, _ = home
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        _, html, _ = await b.page()
        stolen = b.session.cookie_jar.filter_cookies(yarl.URL(b.base))[COOKIE].value
        async with b.session.post(b.base + "/logout", data={"csrf": "wrong"}) as r:
            assert r.status == 403  # another site cannot log the admin out
        assert (await b.get())[0] == 200
        async with b.session.post(b.base + "/logout", data={"csrf": b.csrf(html)}) as r:
            assert r.status == 200 and "déconnecté" in await r.text()
        assert (await b.get())[0] == 401
        async with (
            aiohttp.ClientSession() as replay,
            replay.get(b.api(), headers={"Cookie": f"{COOKIE}={stolen}"}) as r,
        ):
            assert r.status == 401  # the old cookie value is dead on the server, not just forgotten

    browse(settings, scenario)


def test_session_expires(home: Home) -> None:
    settings, _ = home
    settings = dataclasses.replace(settings, http_session_ttl_s=1.0)
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        assert (await b.get())[0] == 200
        await asyncio.sleep(1.1)  # let the session's lifetime pass (the check is the 401 below)
        status, body = await b.get()
        assert status == 401 and body["error"]["code"] == "unauthorized"

    browse(settings, scenario)


def test_https_public_url_makes_the_cookie_secure_and_the_link_https(home: Home) -> None:
    settings, _ = home
    settings = dataclasses.replace(settings, http_public_url="https://moh.example.net/")
    result = CliRunner().invoke(main, ["tokens", "link", "--tenant", "acme"], env=settings_environ(settings))
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith("https://moh.example.net/login/"), result.output

    async def scenario(b: Browserish) -> None:
        response = await b.sign_in(url)
        assert response.status == 303 and COOKIE not in response.cookies
        cookie = response.cookies[f"__Host-{COOKIE}"]  # only this host may set it: no cookie tossing
        assert cookie["secure"] and cookie["path"] == "/" and not cookie["domain"]

    browse(settings, scenario)


def test_bearer_token_needs_no_csrf_and_wins_over_a_cookie(home: Home) -> None:
    settings, good = home
    operator = new_token(settings, "--operator")
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        status, body = await b.put(good, None, tenant="other", Authorization=f"Bearer {operator}")
        assert status == 201 and body["disclaimer"]["accepted_by"].startswith("api token ")
        assert body["disclaimer"]["text_version"] == disclaimer.VERSION

    browse(settings, scenario)


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        ("fr-FR,fr;q=0.9,en;q=0.8", None, "fr"),
        ("en-GB,en;q=0.9", None, "en"),
        ("de-DE,en;q=0.5", None, "en"),
        ("de-DE", None, "fr"),
        ("en-US", "fr", "fr"),
    ],
)
def test_page_language_and_headers(home: Home, accept: str, query: str | None, expected: str) -> None:
    settings, _ = home
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        status, html, response = await b.page(f"/?lang={query}" if query else "/", **{"Accept-Language": accept})
        assert status == 200 and f'<html lang="{expected}">' in html
        assert ("<h1>Music on hold</h1>" if expected == "en" else "<h1>Musique d&#x27;attente</h1>") in html
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["Cache-Control"] == "no-store"
        if query:  # the switch is remembered
            status, html, _ = await b.page("/", **{"Accept-Language": "de"})
            assert f'<html lang="{query}">' in html
        async with b.session.get(b.base + "/static/page.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        async with b.session.get(b.base + "/static/..%2Fpage.py") as r:
            assert r.status == 404

    browse(settings, scenario)


@pytest.mark.embedded_only  # the SQLite file's own upgrade; PostgreSQL upgrades by migrations
def test_old_catalog_gains_the_disclaimer_version_column(home: Home, tmp_path: Path) -> None:
    """A catalog written before text versions were recorded (and before schema versions were: its
    user_version is 0): readers see None, the first writer adds the column, old uploads keep
    version None."""
    settings, good = home
    (tmp_path / "a.mp3").write_bytes(good)
    cli(settings, "upload", "acme", str(tmp_path / "a.mp3"), "--accept-disclaimer", "--by", "x")
    db = sqlite3.connect(settings.catalog_path)
    db.execute("ALTER TABLE uploads DROP COLUMN disclaimer_version")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    with contextlib.closing(open_catalog(settings, writable=False)) as reader:
        tenant = reader.get("acme")
        assert tenant is not None and tenant.disclaimer is not None and tenant.disclaimer.text_version is None
    open_catalog(settings).close()
    with contextlib.closing(sqlite3.connect(settings.catalog_path)) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(uploads)")]
    assert "disclaimer_version" in columns
    with contextlib.closing(open_catalog(settings, writable=False)) as reader:
        tenant = reader.get("acme")
        assert tenant is not None and tenant.disclaimer is not None and tenant.disclaimer.text_version is None


def test_another_site_cannot_sign_the_admin_out(home: Home) -> None:
    """A form posted to /logout from another site carries no Strict cookie: nothing is cleared."""
    settings, _ = home
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        async with (
            aiohttp.ClientSession() as other,
            other.post(b.base + "/logout", data={"csrf": "x"}, headers={"Origin": "http://localhost:9000"}) as r,
        ):
            assert r.status == 401 and "Set-Cookie" not in r.headers
        assert (await b.get())[0] == 200

    browse(settings, scenario)


def test_bad_csrf_tokens_and_origins_are_403_never_500(home: Home) -> None:
    settings, good = home
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(url)).status == 303
        _, html, _ = await b.page()
        csrf = b.csrf(html)
        for token, origin in (
            ("é", None),
            ("\xff", None),
            (csrf, f"https://127.0.0.1:{b.port}"),
            (csrf, f"evil://127.0.0.1:{b.port}"),
        ):
            headers = {"X-CSRF-Token": token.encode("utf-8").decode("latin-1")}
            if origin:
                headers["Origin"] = origin
            async with b.session.delete(b.api(), headers=headers) as r:
                assert r.status == 403, (token, origin, await r.text())
        async with b.session.post(b.base + "/logout", data={"csrf": "é"}) as r:
            assert r.status == 403 and "text/html" in r.headers["Content-Type"]
        async with b.session.delete(b.api(), headers={"X-CSRF-Token": csrf, "Origin": b.base}) as r:
            assert r.status == 204

    browse(settings, scenario)


def test_api_answers_are_private(home: Home) -> None:
    settings, good = home
    token = new_token(settings, "--operator")

    async def scenario(b: Browserish) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        status, _ = await b.put(good, None, **headers)
        assert status == 201
        for tail in ("", "/audio"):
            async with b.session.get(b.api(tail=tail), headers=headers) as r:
                assert r.status == 200
                assert r.headers["Cache-Control"] == "private, no-store"
                assert r.headers["X-Content-Type-Options"] == "nosniff"

    browse(settings, scenario)


def test_form_fields_besides_the_file_are_bounded_and_one_file_only(home: Home) -> None:
    settings, good = home
    token = new_token(settings, "--operator")

    async def scenario(b: Browserish) -> None:
        headers = {"Authorization": f"Bearer {token}"}

        async def chunked_junk() -> AsyncIterator[bytes]:
            yield b'--XX\r\nContent-Disposition: form-data; name="junk"\r\n\r\n'
            for _ in range(200):  # 13 MB of a field nobody asked for, no Content-Length
                yield b"j" * 65536
            yield b"\r\n--XX--\r\n"

        async with b.session.put(
            b.api(), data=chunked_junk(), headers={**headers, "Content-Type": "multipart/form-data; boundary=XX"}
        ) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
        form = aiohttp.FormData()
        form.add_field("disclaimer", "accepted")
        form.add_field("file", io.BytesIO(good), filename="a.mp3")
        form.add_field("file", io.BytesIO(good), filename="b.mp3")
        async with b.session.put(b.api(), data=form, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "malformed_multipart"
        async with b.session.get(b.api(), headers=headers) as r:
            assert (await r.json())["setting"] == "default"

    browse(settings, scenario)


@pytest.mark.embedded_only  # SQLite's one-writer lock; PostgreSQL locks one tenant's rows at a time
def test_a_sign_in_waiting_on_the_catalog_lock_does_not_stall_reads(home: Home) -> None:
    settings, _ = home
    token = new_token(settings, "--operator")
    url = link(settings)

    async def scenario(b: Browserish) -> None:
        holder = sqlite3.connect(settings.catalog_path, timeout=0, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the catalog
        try:
            sign_in = asyncio.ensure_future(b.sign_in(url))
            await asyncio.sleep(0.2)  # let the sign-in reach the lock (the check is below)
            assert not sign_in.done()
            async with b.session.get(b.api(), headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200  # served while the sign-in still waits
            assert not sign_in.done()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (await sign_in).status == 303

    browse(settings, scenario)


def test_operator_lists_and_ends_sign_ins(home: Home) -> None:
    settings, _ = home
    used, unused = link(settings), link(settings)
    link(settings, "other")

    async def scenario(b: Browserish) -> None:
        assert (await b.sign_in(used)).status == 303
        rows = json.loads(cli(settings, "tokens", "sessions", "--json"))
        assert sorted((r["kind"], r["tenant"]) for r in rows) == [
            ("link", "acme"),
            ("link", "other"),
            ("session", "acme"),
        ]
        out = json.loads(cli(settings, "tokens", "sign-out", "--tenant", "acme", "--json"))
        assert out == {"tenant": "acme", "links_voided": 1, "sessions_ended": 1}
        assert (await b.get())[0] == 401
        response = await b.sign_in(unused)
        assert response.status == 410
        async with b.session.get(b.local(unused), headers={"Accept-Language": "en"}) as r:
            assert "cancelled" in await r.text()
        assert [r["tenant"] for r in json.loads(cli(settings, "tokens", "sessions", "--json"))] == ["other"]

    browse(settings, scenario)


def test_secrets_never_reach_the_server_log(home: Home, tmp_path: Path) -> None:
    """aiohttp logs the raw request line or header it cannot parse: with a link or a session in
    it. `serve http` counts those instead of logging them (http/quiet.py), and masks every
    credential's secret in every line it does log."""
    import socket
    import subprocess
    import sys

    from ooma_moh.config import settings_environ
    from ooma_moh.lab import free_port
    from tests.integration.conftest import wait_for_port

    settings, _ = home
    url = link(settings)
    secret = url.rsplit("_", 1)[1]
    port = free_port()
    env = {
        **__import__("os").environ,
        **settings_environ(dataclasses.replace(settings, http_listen=f"127.0.0.1:{port}")),
    }
    log = tmp_path / "serve-http.log"
    with open(log, "w") as stderr:  # the server keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "ooma_moh", "serve", "http"], env=env, stderr=stderr, stdout=subprocess.DEVNULL
        )
    try:
        wait_for_port(port, proc)
        path = url[url.index("/login/") :]
        for raw in (
            f"GET {path}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"GET {path}?{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"GET / HTTP/1.1\r\nHost: x\r\nCookie: omh_session={path[7:]}; pad={'b' * 9000}\r\n\r\n".encode(),
            f"GET //login/{path[7:]} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        ):
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(raw)
                assert conn.recv(1024).split(b"\r\n")[0].split()[1].startswith(b"4")
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "malformed requests answered 400: 3 (" in text, text  # the parse errors are said in aggregate
    assert "//login/..." in text, text  # the access line of the 404 names the route, not the link
    assert secret not in text, text  # no line carries the secret
