"""A catch-up (`sync --all` of an empty MOH directory: a cold node's first sync, from the object
storage in the cluster run) SIGKILLed at each step of its batches leaves published only complete
version directories — the batches switched before the kill, nothing of the others — and the next
run completes it (ooma_moh/mohdir.py and sync.py state the order; the same without a kill is
tests/unit/test_catchup_rules.py)."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ooma_moh.app import build_service, build_syncer
from ooma_moh.config import Settings
from tests.integration.conftest import settings_env
from tests.unit.test_catchup_rules import seed

ROOT = Path(__file__).resolve().parents[2]
TENANTS = 10  # the driver's batches: 4, 4, 2
#: kill point -> classes published after it: during the first batch none; after its switch 4;
#: during the second (fsync:3 its partial builds fsynced, fsync:4 renamed, not switched) still 4
POINTS = {
    "partial:2": 0,
    "fsync:1": 0,
    "fsync:2": 0,
    "batch:1": 4,
    "partial:6": 4,
    "fsync:3": 4,
    "fsync:4": 4,
    "batch:2": 8,
}


def cold_node(settings: Settings, tmp_path: Path) -> Settings:
    """A node with the catalog (and, in the cluster run, the bucket) of ``settings`` and its own
    empty home; with local blobs, the host itself (its MOH directory is still empty)."""
    if not settings.blob_url:
        return settings
    home = tmp_path / "node"
    return dataclasses.replace(
        settings,
        home=home,
        moh_dir=home / "moh",
        realtime_db=home / "realtime.sqlite3",
        classes_conf=home / "classes.conf",
    )


@pytest.mark.parametrize("point", list(POINTS))
def test_a_catch_up_killed_in_any_batch_is_consistent_and_completes(
    settings: Settings, tmp_path: Path, point: str
) -> None:
    service = build_service(settings)
    try:
        seed(service.catalog, service.blobs, tmp_path / "scratch", TENANTS)
    finally:
        service.catalog.close()
    node = cold_node(settings, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.sync_crash_driver", point],
        cwd=ROOT,
        env=settings_env(node),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    service = build_service(node)
    try:
        syncer = build_syncer(node, service)
        desired = syncer.desired(None)
        published = syncer.published()
        assert len(published) == POINTS[point]
        for moh_class, directory in published.items():  # only whole version directories are published
            assert directory == desired[moh_class][0]
            assert syncer.on_disk(moh_class, desired[moh_class][1]), moh_class
        report = syncer.run(None)
        assert syncer.published() == {c: d for c, (d, _) in desired.items()}
        assert report.counts["added"] == TENANTS - POINTS[point]
        assert not list(node.moh_dir.glob("*/.partial-*")) and not list(node.moh_dir.glob(".*"))
        assert syncer.run(None).files_written == 0
    finally:
        service.catalog.close()
