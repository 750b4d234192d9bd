"""Drafts, both previews, the waveform and restore through the HTTP API, on a real server with
real ffmpeg, on each catalog back end (SQLite, PostgreSQL): a draft changes nothing callers hear
until it is saved; restore brings the replaced file back."""

from __future__ import annotations

import dataclasses
import io
import struct
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from ooma_moh.app import build_service
from tests.audio import dominant_frequency, ffmpeg, tone
from tests.integration.test_http_api import Api, Home, api, auth, new_token, published, run

DRAFTED = 660.0


async def post_draft(client: Api, tenant: str, data: bytes, token: str | None = None) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename="draft.mp3", content_type="application/octet-stream")
    async with client.session.post(client.url(tenant, "/drafts"), data=form, headers=auth(token)) as r:
        return r.status, await r.json()


async def save_draft(client: Api, tenant: str, draft: str, disclaimer: str | None = "accepted") -> tuple[int, Any]:
    """PUT with the fields ``draft`` and ``disclaimer``, multipart as the page sends them (a
    urlencoded form is accepted too: :func:`restore` sends one)."""
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("draft", draft)
    if disclaimer is not None:
        form.add_field("disclaimer", disclaimer)
    async with client.session.put(client.url(tenant), data=form) as r:
        return r.status, await r.json()


async def restore(client: Api, tenant: str, disclaimer: str | None = "accepted") -> tuple[int, Any]:
    data = {"disclaimer": disclaimer} if disclaimer else {}
    async with client.session.post(client.url(tenant, "/restore"), data=data) as r:
        return r.status, await r.json()


async def wav(client: Api, url: str) -> tuple[int, np.ndarray]:
    """The WAV at ``url``: its rate and samples (checked to be 16-bit mono PCM)."""
    async with client.session.get(url) as r:
        assert r.status == 200 and r.content_type == "audio/wav", await r.text()
        body = await r.read()
    fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[20:36])
    assert (fmt, channels, bits) == (1, 1, 16) and body[36:40] == b"data"
    assert struct.unpack("<I", body[40:44])[0] == len(body) - 44
    return rate, np.frombuffer(body[44:], dtype="<i2").astype(np.float64) / 32768


def test_a_draft_is_heard_and_analysed_before_it_is_saved_then_restore_undoes_the_save(
    home: Home, tmp_path: Path
) -> None:
    settings, token, good = home
    drafted = tone(tmp_path / "draft.mp3", DRAFTED, 3, "mp3").read_bytes()

    async def scenario() -> None:
        async with api(settings, token) as client:
            assert (await client.put("acme", good))[0] == 201
            first = await client.wait_live("acme")
            assert first["previous"] is None and first["analysis"]["warnings"] == ["too_short"]
            before = published(settings)

            status, draft = await post_draft(client, "acme", drafted)
            assert status == 201, draft
            assert set(draft) == {"draft", "analysis", "expires_at", "original_name", "size", "duration_ms"}
            assert draft["original_name"] == "draft.mp3" and draft["size"] == len(drafted)
            assert draft["analysis"]["duration_ms"] == draft["duration_ms"] and "loop_seam" in draft["analysis"]
            # nothing callers hear has changed
            status, now = await client.get("acme")
            assert now["file"] == first["file"] and published(settings) == before

            # both previews: the phone one is the μ-law rendition decoded, sample for sample
            drafts_url = client.url("acme", f"/drafts/{draft['draft']}")
            rate, phone = await wav(client, drafts_url + "/audio?quality=phone")
            service = build_service(settings, writable=False)
            try:
                found = service.draft("acme", draft["draft"])
                ulaw = service.blobs.read(found.rendition("ulaw").sha256)
            finally:
                service.catalog.close()
            assert rate == 8000 and len(phone) == len(ulaw)
            assert abs(dominant_frequency(phone, 8000) - DRAFTED) < 5
            rate, wide = await wav(client, drafts_url + "/audio")
            assert rate == 16000 and abs(len(wide) / 16000 - draft["duration_ms"] / 1000) < 0.01
            async with client.session.get(drafts_url + "/audio?quality=best") as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_quality"
            async with client.session.get(drafts_url + "/waveform") as r:
                outline = await r.json()
            assert outline["duration_ms"] == draft["duration_ms"] and 0 < len(outline["peaks"]) <= 2000
            assert all(-1 <= low <= high <= 1 for low, high in outline["peaks"])
            assert max(high for _, high in outline["peaks"]) > 0.1  # the tone, not silence

            # another tenant never sees it: 404, as for a draft that does not exist
            other = new_token(settings, "--tenant", "beta")
            async with client.session.get(client.url("beta", f"/drafts/{draft['draft']}"), headers=auth(other)) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "no_draft"
            async with client.session.get(drafts_url, headers=auth(other)) as r:
                assert r.status == 404  # acme's URL with beta's token: as for an unknown tenant

            # saving needs the disclaimer; then it is the tenant's file, published like an upload
            status, body = await save_draft(client, "acme", draft["draft"], disclaimer=None)
            assert status == 422 and body["error"]["code"] == "disclaimer_required", body
            status, body = await save_draft(client, "acme", draft["draft"])
            assert status == 201, body
            live = await client.wait_live("acme")
            assert live["status"]["state"] == "live" and live["file"]["name"] == "draft.mp3"
            assert live["analysis"] == draft["analysis"]
            assert live["previous"]["original_name"] == "hold.mp3"
            rate, heard = await wav(client, client.url("acme", "/audio?quality=phone"))
            assert abs(dominant_frequency(heard, rate) - DRAFTED) < 5
            status, body = await save_draft(client, "acme", draft["draft"])
            assert status == 404 and body["error"]["code"] == "no_draft"  # saved once

            # restore: the previous file again, then nothing left before it
            status, body = await restore(client, "acme", disclaimer=None)
            assert status == 422 and body["error"]["code"] == "disclaimer_required"
            status, body = await restore(client, "acme")
            assert status == 201, body
            back = await client.wait_live("acme")
            assert back["file"]["sha256"] == first["file"]["sha256"] and back["status"]["state"] == "live"
            assert back["previous"]["original_name"] == "draft.mp3"
            rate, heard = await wav(client, client.url("acme", "/audio"))
            assert abs(dominant_frequency(heard, rate) - 440.0) < 5
            status, body = await restore(client, "beta")
            assert status == 409 and body["error"]["code"] == "nothing_to_restore"

    run(scenario())


def test_drafts_are_bounded_and_a_bad_file_is_refused_as_an_upload(home: Home, tmp_path: Path) -> None:
    settings, token, good = home

    async def scenario() -> None:
        async with api(settings, token) as client:
            made = []
            for _ in range(settings.max_drafts_per_tenant):
                status, body = await post_draft(client, "acme", good)
                assert status == 201, body
                made.append(body["draft"])
            async with client.session.post(client.url("acme", "/drafts"), data={"file": io.BytesIO(good)}) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "60"
                assert (await r.json())["error"]["code"] == "too_many_drafts"
            async with client.session.delete(client.url("acme", f"/drafts/{made[0]}")) as r:
                assert r.status == 204
            async with client.session.delete(client.url("acme", f"/drafts/{made[0]}")) as r:
                assert r.status == 404
            status, body = await post_draft(client, "acme", b"not audio at all" * 10)
            assert status == 415 and body["error"]["code"] == "unrecognised_format", body
            status, body = await client.get("acme")
            assert body["setting"] == "default" and body["file"] is None  # nothing changed
            # a form with both a file and a draft to save is refused, nothing stored
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(good), filename="x.mp3")
            form.add_field("draft", made[1])
            form.add_field("disclaimer", "accepted")
            async with client.session.put(client.url("acme"), data=form) as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "file_and_draft"

    run(scenario())


@pytest.mark.parametrize("quality", ["phone", "wideband"])
def test_audio_ranges_in_both_qualities(home: Home, quality: str) -> None:
    settings, token, good = home

    async def scenario() -> None:
        async with api(settings, token) as client:
            assert (await client.put("acme", good))[0] == 201
            url = client.url("acme", f"/audio?quality={quality}")
            async with client.session.get(url) as r:
                whole = await r.read()
            for spec in ("bytes=0-99", "bytes=-11", "bytes=45-", "bytes=1001-2000", "bytes=44-44"):
                async with client.session.get(url, headers={"Range": spec}) as r:
                    assert r.status == 206, spec
                    first, last = (int(x) for x in r.headers["Content-Range"].split()[1].split("/")[0].split("-"))
                    assert await r.read() == whole[first : last + 1], spec

    run(scenario())


def test_a_voice_draft_gets_music_under_it_from_either_bed(home: Home, tmp_path: Path) -> None:
    """bed=default from a directory like Asterisk's default class (one base name in two formats,
    another file, a file of another kind), bed=current from the tenant's file; the levels
    themselves are measured in tests/integration/test_mix.py."""
    settings, token, good = home
    beds = tmp_path / "default-moh"
    beds.mkdir()
    tone(beds / "a-tune.wav", 300, 4)
    (beds / "a-tune.ulaw").write_bytes(b"\xff" * 8000)  # the same name in a worse format: not used
    (beds / "README.txt").write_text("not music")
    webm = tmp_path / "voice.webm"  # as a browser records it: WebM/Opus, through the API
    ffmpeg("-f", "lavfi", "-i", "sine=f=1000:d=4", "-c:a", "libopus", "-b:a", "48k", "-f", "webm", str(webm))
    voice = webm.read_bytes()
    settings = dataclasses.replace(settings, music_bed_default=beds)

    async def scenario() -> None:
        async with api(settings, token) as client:
            status, spoken = await post_draft(client, "acme", voice)
            assert status == 201, spoken
            mix_url = client.url("acme", f"/drafts/{spoken['draft']}/mix")
            async with client.session.post(mix_url, json={"bed": "current"}) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "no_file"  # on default music
            for bad in ({"bed": "jazz"}, {"bed": "default", "bed_level_db": 5}, [1, 2]):
                async with client.session.post(mix_url, json=bad) as r:
                    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_mix", bad
            async with client.session.post(mix_url, json={"bed": "default", "bed_level_db": -12}) as r:
                assert r.status == 201, await r.text()
                mixed = await r.json()
            assert mixed["draft"] != spoken["draft"] and mixed["original_name"] == "draft + music.wav"
            assert mixed["duration_ms"] > spoken["duration_ms"]  # intro and outro
            rate, heard = await wav(client, client.url("acme", f"/drafts/{mixed['draft']}/audio"))
            spectrum = np.abs(np.fft.rfft(heard))
            freqs = np.fft.rfftfreq(len(heard), 1 / rate)
            assert spectrum[np.argmin(abs(freqs - 300))] > 0.05 * spectrum.max()  # the bed is there
            assert abs(dominant_frequency(heard, rate) - 1000) < 5  # the voice above it
            status, _ = await client.get("acme")
            assert published(settings) == {}  # drafts and mixes change nothing callers hear

            assert (await save_draft(client, "acme", mixed["draft"]))[0] == 201
            async with client.session.delete(client.url("acme", f"/drafts/{spoken['draft']}")) as r:
                assert r.status == 204  # within max_drafts_per_tenant for what follows
            status, spoken = await post_draft(client, "acme", voice)
            async with client.session.post(
                client.url("acme", f"/drafts/{spoken['draft']}/mix"), json={"bed": "current"}
            ) as r:
                assert r.status == 201, await r.text()
            broken = dataclasses.replace(settings, music_bed_default=tmp_path / "nowhere")
        async with api(broken, token) as client:
            status, spoken = await post_draft(client, "acme", voice)
            async with client.session.post(
                client.url("acme", f"/drafts/{spoken['draft']}/mix"), json={"bed": "default"}
            ) as r:
                assert r.status == 503 and (await r.json())["error"]["code"] == "bed_unavailable"

    run(scenario())
