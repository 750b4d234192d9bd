"""Through the HTTP API only, on the lab Asterisk: once the API says ``live``, a caller put on the
tenant's class hears the new file; a caller already listening during a replacement keeps hearing
the old file whole; after DELETE, the default music. Both publication modes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.lab import DEFAULT_TONE, LabAsterisk
from tests.audio import tone
from tests.integration.conftest import longest_silence, tones_heard
from tests.integration.test_http_api import api, new_token
from tests.integration.test_sync_asterisk import assert_hears

FIRST, SECOND = 520.0, 780.0


def start_listener(lab: LabAsterisk, name: str) -> Path:
    """A caller on tenant-acme's class, recorded for 8 s; returns once 2 s are recorded."""
    listening = lab.start_recording(name, 8, "tenant-acme")
    deadline = time.monotonic() + 20
    while not listening.exists() or listening.stat().st_size < 44 + 16000 * 2:
        assert time.monotonic() < deadline, "the listener never started"
        time.sleep(0.05)
    return listening


@pytest.mark.every_backend  # the API's publication from PostgreSQL + S3 too
def test_api_change_is_heard_once_live(lab: LabAsterisk, lab_settings: Settings, tmp_path: Path) -> None:
    token = new_token(lab_settings, "--tenant", "acme")
    first = tone(tmp_path / "first.mp3", FIRST, 3, "mp3").read_bytes()
    second = tone(tmp_path / "second.mp3", SECOND, 3, "mp3").read_bytes()

    async def scenario() -> None:
        async with api(lab_settings, token) as client:
            listening = None
            for data, freq in ((first, FIRST), (second, SECOND)):  # an upload, then a replacement
                if freq == SECOND:  # someone is on hold on the old file while it is replaced
                    name = f"api_{lab_settings.publish_mode}_listener"
                    listening = await asyncio.to_thread(start_listener, lab, name)
                status, body = await client.put("acme", data)
                assert status == 201, body
                live = await client.wait_live("acme")
                assert live["status"]["state"] == "live", live
                name = f"api_{lab_settings.publish_mode}_{int(freq)}"
                heard = await asyncio.to_thread(lab.record, name, 2, live["class"])
                assert_hears(tones_heard(heard, [FIRST, SECOND]), freq)
            assert listening is not None
            old = tones_heard(await asyncio.to_thread(lab.wait_recording, listening), [FIRST, SECOND])
            assert longest_silence(old) <= 1, old  # no gap over 200 ms
            assert all(w == FIRST for w in old[1:]), old  # the old file to the end, never a mix
            async with client.session.delete(client.url("acme")) as r:
                assert r.status == 204
            assert (await client.wait_live("acme"))["status"]["state"] == "live"
            heard = await asyncio.to_thread(lab.record, f"api_{lab_settings.publish_mode}_deleted", 2, "tenant-acme")
            assert_hears(tones_heard(heard, [FIRST, SECOND]), DEFAULT_TONE)

    asyncio.run(scenario())
