"""An ingest SIGKILLed at any point leaves the catalog and blobs consistent; a re-run completes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ooma_moh.app import build_service
from ooma_moh.config import Settings
from ooma_moh.model import MohSetting
from ooma_moh.storage.blobs import sha256_file
from ooma_moh.storage.s3 import MIN_AGE_S
from tests.audio import tone
from tests.integration.conftest import settings_env

ROOT = Path(__file__).resolve().parents[2]
POINTS = ["decoded", "put:1", "put:3", "put:6", "in-transaction", "committed"]


def assert_consistent(settings: Settings) -> None:
    """Every blob the catalog references exists with the right content."""
    service = build_service(settings)
    try:
        for tenant in service.list():
            if tenant.setting is MohSetting.FILE:
                assert tenant.upload is not None
                for sha in [tenant.upload.sha256] + [r.sha256 for r in tenant.renditions]:
                    assert sha256_file(service.blobs.locate(sha)) == sha
    finally:
        service.catalog.close()


@pytest.mark.parametrize("point", POINTS)
def test_killed_ingest_leaves_old_or_new_state(settings: Settings, tmp_path: Path, point: str) -> None:
    service = build_service(settings)
    old = service.upload(
        "acme", tone(tmp_path / "old.wav", 440, seconds=2), accept_disclaimer=True, accepted_by="tester"
    )
    service.catalog.close()
    new_file = tone(tmp_path / "new.mp3", 880, seconds=2, container="mp3")

    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.crash_driver", "acme", str(new_file), point],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=settings_env(settings),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    assert_consistent(settings)
    service = build_service(settings)
    after_kill = service.show("acme")
    new_sha = sha256_file(new_file)
    if point == "committed":
        assert after_kill.upload is not None
        assert after_kill.upload.sha256 == new_sha
    else:
        assert after_kill == old

    again = service.upload("acme", new_file, accept_disclaimer=True, accepted_by="tester")
    assert again.upload is not None
    assert again.upload.sha256 == new_sha
    assert_consistent(settings)
    if settings.blob_url:  # object storage: an orphan is trashed once an hour old (an upload may be committing)
        service.blobs.collect(service.catalog.referenced_blobs, now=time.time() + MIN_AGE_S)
    stored = service.blobs.stored()
    assert stored == service.catalog.referenced_blobs()
    assert list(service.blobs.scratch_root.iterdir()) == []
    service.catalog.close()
