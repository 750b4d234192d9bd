"""Test calls ("call my phone", docs/http.md "Test call") through the HTTP API on the lab Asterisk:
the phone that answers hears the tenant's music — recorded at the far end of a real SIP call and
matched to the tenant's tone every 100 ms —, a busy phone fails the call ``busy``, an endpoint
Asterisk does not know fails it ``unreachable``, another tenant's endpoint is 404, a second call
while one rings or plays and the sixth call in an hour are 429. The phones are lab endpoints
(ooma_moh/lab/conf/pjsip.conf): ``lab-phone`` answers and records, ``lab-busy`` answers busy;
``lab-nowhere`` is in the endpoint map only."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from ooma_moh.app import build_syncer
from ooma_moh.config import Settings
from ooma_moh.lab import DEFAULT_TONE, LabAsterisk
from ooma_moh.service import MohService
from ooma_moh.testcall import PER_HOUR
from tests.audio import tone
from tests.integration.conftest import tones_heard
from tests.integration.test_http_api import Api, api, new_token

#: realtime publication only: what is checked is the dialling and what the phone hears once a
#: class is published, the same on every back end
pytestmark = [pytest.mark.parametrize("mode", ["realtime"]), pytest.mark.backend_neutral]
ALPHA = 440.0
SECONDS = 2


async def follow(client: Api, base: str, call: str, within_s: float = 20.0) -> list[dict[str, Any]]:
    """The call's states as polled every 50 ms until it is over (each change once)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    while not seen or seen[-1]["state"] not in ("ended", "failed"):
        assert time.monotonic() < deadline, seen
        async with client.session.get(f"{base}/moh/test-call/{call}") as r:
            assert r.status == 200
            body = await r.json()
        if not seen or body["state"] != seen[-1]["state"]:
            seen.append(body)
        await asyncio.sleep(0.05)
    return seen


async def place(client: Api, base: str, endpoint: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with client.session.post(f"{base}/moh/test-call", json={"endpoint": endpoint}) as r:
        return r.status, await r.json(), dict(r.headers)


def test_a_test_call_plays_the_tenants_music_to_the_phone(
    lab: LabAsterisk,
    lab_settings: Settings,
    lab_service: MohService,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lab_service.upload("alpha", tone(tmp_path / "a.wav", ALPHA, seconds=4), accept_disclaimer=True, accepted_by="t")
    build_syncer(lab_settings, lab_service).run(None)
    for endpoint in ("PJSIP/lab-phone", "PJSIP/lab-busy", "PJSIP/lab-nowhere"):
        lab_service.catalog.map_endpoint(endpoint, "alpha")
    lab_service.catalog.map_endpoint("PJSIP/lab-loop", "beta")
    settings = dataclasses.replace(lab_settings, test_call_seconds=SECONDS)
    token = new_token(settings, "--tenant", "alpha")
    recording = lab.recordings / "testcall-lab-phone.wav"
    for stale in (recording, recording.with_suffix(".done")):
        stale.unlink(missing_ok=True)
    caplog.set_level(logging.INFO, logger="ooma_moh")

    async def scenario() -> None:
        async with api(settings, token) as client:
            base = f"http://127.0.0.1:{client.port}/api/v1/tenants/alpha"
            async with client.session.get(f"{base}/endpoints") as r:
                assert await r.json() == {"endpoints": ["PJSIP/lab-busy", "PJSIP/lab-nowhere", "PJSIP/lab-phone"]}
            others = [await place(client, base, e) for e in ("PJSIP/lab-loop", "PJSIP/nobody")]
            assert [(s, b) for s, b, _ in others] == [(404, others[0][1])] * 2  # beta's, unknown: the same
            status, placed, _ = await place(client, base, "PJSIP/lab-phone")
            assert status == 202, placed
            status, body, headers = await place(client, base, "PJSIP/lab-busy")  # one at a time
            assert (status, body["error"]["code"]) == (429, "test_call_in_progress") and int(headers["Retry-After"]) > 0
            states = await follow(client, base, placed["call"])
            assert [s["state"] for s in states] in (["ringing", "playing", "ended"], ["playing", "ended"]), states
            assert states[-1]["class"] == "tenant-alpha" and states[-1]["reason"] is None
            heard = tones_heard(await asyncio.to_thread(lab.wait_recording, recording, 20), [ALPHA])
            print("heard:", heard)
            assert DEFAULT_TONE not in heard
            assert abs(heard.count(ALPHA) / 10 - SECONDS) <= 0.5, heard  # the tenant's music, for its seconds
            for endpoint, reason in [("PJSIP/lab-nowhere", "unreachable")] + [("PJSIP/lab-busy", "busy")] * (
                PER_HOUR - 2
            ):  # each fails, and counts
                status, failing, _ = await place(client, base, endpoint)
                assert status == 202, failing
                last = (await follow(client, base, failing["call"]))[-1]
                assert (last["state"], last["reason"]) == ("failed", reason), last
            status, body, headers = await place(client, base, "PJSIP/lab-phone")  # the sixth in the hour
            assert (status, body["error"]["code"]) == (429, "too_many_test_calls")
            assert 3500 < int(headers["Retry-After"]) <= 3600

    asyncio.run(scenario())
    placed_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("test-call call=")]
    assert any("endpoint=PJSIP/lab-phone dial=PJSIP/lab-phone by=" in line for line in placed_lines), placed_lines
