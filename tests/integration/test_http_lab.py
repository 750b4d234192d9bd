"""Through the HTTP API only, on the lab Asterisk: once the API says ``live``, a caller put on the
tenant's class hears the new file; after DELETE, the default music. Both publication modes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ooma_moh.config import Settings
from ooma_moh.lab import DEFAULT_TONE, LabAsterisk
from tests.audio import tone
from tests.integration.conftest import tones_heard
from tests.integration.test_http_api import api, new_token
from tests.integration.test_sync_asterisk import assert_hears

FIRST, SECOND = 520.0, 780.0


def test_api_change_is_heard_once_live(lab: LabAsterisk, lab_settings: Settings, tmp_path: Path) -> None:
    token = new_token(lab_settings, "--tenant", "acme")
    first = tone(tmp_path / "first.mp3", FIRST, 3, "mp3").read_bytes()
    second = tone(tmp_path / "second.mp3", SECOND, 3, "mp3").read_bytes()

    async def scenario() -> None:
        async with api(lab_settings, token) as client:
            for data, freq in ((first, FIRST), (second, SECOND)):  # an upload, then a replacement
                status, body = await client.put("acme", data)
                assert status == 201, body
                live = await client.wait_live("acme")
                assert live["status"]["state"] == "live", live
                name = f"api_{lab_settings.publish_mode}_{int(freq)}"
                heard = await asyncio.to_thread(lab.record, name, 2, live["class"])
                assert_hears(tones_heard(heard, [FIRST, SECOND]), freq)
            async with client.session.delete(client.url("acme")) as r:
                assert r.status == 204
            assert (await client.wait_live("acme"))["status"]["state"] == "live"
            heard = await asyncio.to_thread(lab.record, f"api_{lab_settings.publish_mode}_deleted", 2,
                                            "tenant-acme")
            assert_hears(tones_heard(heard, [FIRST, SECOND]), DEFAULT_TONE)

    asyncio.run(scenario())
