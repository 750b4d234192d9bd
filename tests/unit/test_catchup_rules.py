"""A catch-up of many tenants, batched and pipelined (ooma_moh/mohdir.py and sync.py state the
order): in realtime mode each batch is switched as soon as its version directories are complete,
and only complete ones; in static mode once, after every batch; a failure in a later batch leaves
the earlier ones published and nothing half-built. Also what a sync of named tenants reads: their
rows, not every tenant's. The crash version (a SIGKILL at each step) is
tests/integration/test_catchup.py."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.errors import StorageError
from ooma_moh.model import RENDITION_FORMATS, Disclaimer, Rendition, TenantMoh, UploadedFile
from ooma_moh.mohdir import MohDirectory
from ooma_moh.nodecheck import Published
from ooma_moh.publish import RealtimePublisher
from ooma_moh.storage import BlobStore, TenantCatalog
from ooma_moh.storage.base import Blobs
from ooma_moh.storage.memory import MemoryCatalog
from ooma_moh.sync import Syncer
from tests.unit.fake_publisher import RecordedPublisher


def seed(catalog: TenantCatalog, blobs: Blobs, scratch: Path, tenants: int) -> list[TenantMoh]:
    """``tenants`` tenants ``t00``, ``t01``, … on file, each with 5 renditions of its own (1 kB),
    written straight to the catalog and the blob store."""
    scratch.mkdir(parents=True, exist_ok=True)
    now, made = datetime.now(UTC), []
    for t in range(tenants):
        renditions = []
        for fmt in RENDITION_FORMATS:
            source = scratch / fmt.extension
            source.write_bytes(hashlib.sha256(f"{t}-{fmt.extension}".encode()).digest() * 32)
            sha, size = blobs.put(source)
            renditions.append(Rendition(fmt.extension, fmt.sample_rate, size, sha))
        upload = UploadedFile("x.wav", 1, renditions[0].sha256, 1000, "wav", now)
        disclaimer = Disclaimer("test", now, renditions[0].sha256)
        made.append(catalog.save_upload(f"t{t:02d}", upload, disclaimer, tuple(renditions)))
    return made


class Recorder(RecordedPublisher):
    """A publisher that records each switch and checks, at the switch, that every directory it
    is given is complete on disk (the rule: nothing is published before its files)."""

    def __init__(self, mohdir: MohDirectory, tenants: list[TenantMoh], needs_reload: bool = False) -> None:
        super().__init__()
        self.mohdir, self.needs_reload = mohdir, needs_reload
        self.by_class = {f"tenant-{t.tenant_id}": t for t in tenants}
        self.switches: list[tuple[list[str], list[str]]] = []

    def apply(self, upserts: Mapping[str, str], deletes: set[str], *, sweep: bool = False) -> None:
        for moh_class, directory in upserts.items():
            tenant = self.by_class[moh_class]
            assert self.mohdir.is_complete(moh_class, tenant.version, tenant.renditions), moh_class
            assert directory == str(self.mohdir.version_dir(moh_class, tenant.version))
        self.switches.append((sorted(upserts), sorted(deletes)))
        super().apply(upserts, deletes, sweep=sweep)


def syncer_of(tmp_path: Path, tenants: int, needs_reload: bool = False) -> tuple[Syncer, Recorder, BlobStore]:
    settings = Settings(home=tmp_path / "home", moh_dir=tmp_path / "moh")
    catalog, blobs = MemoryCatalog(), BlobStore(tmp_path / "blobs")
    made = seed(catalog, blobs, tmp_path / "scratch", tenants)
    mohdir = MohDirectory(settings.moh_dir, blobs)
    recorder = Recorder(mohdir, made, needs_reload)
    return Syncer(settings, catalog, mohdir, recorder, reload=lambda: None), recorder, blobs


def test_realtime_switches_each_batch_once_it_is_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ooma_moh.mohdir.BATCH", 4)
    syncer, recorder, _ = syncer_of(tmp_path, 10)
    recorder.classes["tenant-gone"] = str(tmp_path / "moh" / "tenant-gone" / "v0")  # to be removed
    steps: list[int] = []
    report = syncer.run(None, progress=steps.append)
    assert [len(upserts) for upserts, _ in recorder.switches] == [4, 4, 2]
    assert [deletes for _, deletes in recorder.switches] == [[], [], ["tenant-gone"]]  # with the last switch
    assert report.files_written == 50 and report.classes == 10 and report.published
    assert sum(steps) == len(report.plan) == 11
    assert not list((tmp_path / "moh").glob("*/.partial-*"))
    again = syncer.run(None)
    assert again.files_written == 0 and len(recorder.switches) == 3  # nothing to switch


def test_a_batch_of_many_directories_is_made_durable_by_one_commit_each_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than THREADS directories in a batch: their partial builds, then their class
    directories, each made durable by one commit of the file system (not an fsync each); a batch
    of a few: an fsync of each directory."""
    from ooma_moh import mohdir
    from ooma_moh.storage.blobs import fsync_dir, sync_filesystem

    commits: list[Path] = []
    fsynced: list[Path] = []

    def commit(path: Path) -> None:
        commits.append(path)
        sync_filesystem(path)

    def fsync(path: Path) -> None:
        fsynced.append(path)
        fsync_dir(path)

    monkeypatch.setattr(mohdir, "sync_filesystem", commit)
    monkeypatch.setattr(mohdir, "fsync_dir", fsync)
    syncer, recorder, _ = syncer_of(tmp_path, mohdir.THREADS + 2)
    report = syncer.run(None)
    assert report.files_written == 5 * (mohdir.THREADS + 2) and len(recorder.switches) == 1
    assert commits == [tmp_path / "moh"] * 2 and fsynced == []
    monkeypatch.setattr(mohdir, "BATCH", 4)
    commits.clear()
    syncer, recorder, _ = syncer_of(tmp_path / "small", 4)
    syncer.run(None)
    assert commits == [] and len(fsynced) == 4 + 4  # the 4 partial builds, then their 4 class directories


def test_static_mode_switches_once_after_every_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The include file is read by Asterisk only at a reload: one switch, one reload, marked
    pending before the switch."""
    monkeypatch.setattr("ooma_moh.mohdir.BATCH", 4)
    syncer, recorder, _ = syncer_of(tmp_path, 10, needs_reload=True)
    reloads: list[bool] = []
    syncer.reload = lambda: reloads.append(syncer._pending_marker.exists())
    report = syncer.run(None)
    assert [len(upserts) for upserts, _ in recorder.switches] == [10]
    assert reloads == [True] and report.reloaded and not syncer._pending_marker.exists()


def test_a_failure_in_a_later_batch_leaves_the_earlier_ones_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant t09's blob is lost: batches 1 and 2 go live, the third fails whole (its other
    directory built is not kept half-way: no partial build remains), and the error is the sync's."""
    monkeypatch.setattr("ooma_moh.mohdir.BATCH", 4)
    syncer, recorder, blobs = syncer_of(tmp_path, 10)
    lost = syncer.catalog.get("t09")
    assert lost is not None
    blobs.path(lost.renditions[2].sha256).unlink()
    with pytest.raises(StorageError) as caught:
        syncer.run(None)
    assert caught.value.reason == "blob_missing"
    assert sorted(recorder.classes) == [f"tenant-t{t:02d}" for t in range(8)]
    assert not list((tmp_path / "moh").glob("*/.partial-*"))
    assert not (tmp_path / "moh" / "tenant-t09").joinpath(lost.version).exists()


def test_a_sync_of_named_tenants_reads_only_their_rows(tmp_path: Path) -> None:
    """The realtime database is read for the named classes (a change on a node with thousands of
    tenants reads one row, not all), counted apart; a foreign row is found by name too."""
    publisher = RealtimePublisher(tmp_path / "rt.sqlite3", "tenant-")
    publisher.apply({f"tenant-{i}": f"/m/{i}/v1" for i in range(50)}, set())
    assert publisher.current({"tenant-3", "tenant-7", "tenant-none"}) == {
        "tenant-3": "/m/3/v1",
        "tenant-7": "/m/7/v1",
    }
    assert publisher.current(set()) == {} and len(publisher.current()) == 50
    with contextlib.closing(sqlite3.connect(tmp_path / "rt.sqlite3")) as db, db:  # another application's row
        db.execute("INSERT INTO musiconhold (name, mode, directory) VALUES ('tenant-x', 'files', '/srv/x')")
    assert publisher.foreign(["tenant-x", "tenant-3"]) == {"tenant-x"}
    assert "tenant-x" not in publisher.current({"tenant-x"}) and len(publisher.current()) == 50 == publisher.count()


def test_the_manifest_of_a_scoped_sync_forgets_only_within_its_scope(tmp_path: Path) -> None:
    manifest = Published()
    for name in ("tenant-a", "tenant-b", "tenant-c"):
        manifest.note(name, tmp_path / name, ())
    manifest.keep_only({"tenant-b": "x"}, within={"tenant-a", "tenant-b"})  # a's change: withdrawn
    assert manifest.classes() == {"tenant-b", "tenant-c"}
    manifest.keep_only({"tenant-c": "x"})  # a full sync: everything else goes
    assert manifest.classes() == {"tenant-c"}
