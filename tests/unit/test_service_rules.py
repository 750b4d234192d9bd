"""Service rules with a fake converter: nothing is stored unless everything succeeded."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.errors import (
    DisclaimerRequired,
    InvalidTenantId,
    NoSuchDraft,
    NoTenantFile,
    NothingToRestore,
    TooManyDrafts,
    UploadRejected,
)
from ooma_moh.intake import clean_original_name
from ooma_moh.media_rules import Conversion
from ooma_moh.model import MohSetting
from ooma_moh.rejections import Rejection
from ooma_moh.service import MohService
from ooma_moh.storage import BlobStore, SqliteCatalog

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeConverter:
    """Writes one byte per rendition; can be told to fail."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.calls = 0

    def convert(self, source: Path, workdir: Path) -> Conversion:
        self.calls += 1
        if self.fail:
            raise self.fail
        files = {}
        for ext in ("sln", "sln16", "ulaw", "alaw", "g722"):
            files[ext] = workdir / f"r.{ext}"
            files[ext].write_bytes(source.read_bytes()[:8] + ext.encode())
        return Conversion("wav", 2000, files, {"duration_ms": 2000, "warnings": []})


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[MohService, FakeConverter]]:
    settings = Settings(home=tmp_path, max_upload_bytes=100)
    converter = FakeConverter()
    svc = MohService(
        settings, SqliteCatalog(settings.catalog_path), BlobStore(settings.blob_dir), converter, clock=lambda: NOW
    )
    yield svc, converter
    svc.catalog.close()


def test_disclaimer_required_reads_nothing(fake: tuple[MohService, FakeConverter]) -> None:
    svc, converter = fake
    stream = io.BytesIO(b"x" * 10)
    with pytest.raises(DisclaimerRequired, match="disclaimer must be accepted"):
        svc.upload("acme", stream, accept_disclaimer=False, accepted_by="tester")
    assert stream.tell() == 0 and converter.calls == 0 and svc.list() == []


def test_stream_over_limit_is_rejected_without_reading_it_all(fake: tuple[MohService, FakeConverter]) -> None:
    svc, converter = fake
    stream = io.BytesIO(b"x" * 10_000)
    with pytest.raises(UploadRejected) as info:
        svc.upload("acme", stream, accept_disclaimer=True, accepted_by="tester")
    assert info.value.reason == "too_large"
    assert stream.tell() <= 101 and converter.calls == 0


def test_upload_records_file_disclaimer_and_renditions(fake: tuple[MohService, FakeConverter]) -> None:
    svc, _ = fake
    result = svc.upload(
        "acme",
        io.BytesIO(b"abcdefgh"),
        accept_disclaimer=True,
        accepted_by="alice",
        original_name="../../etc/My Song\n.mp3",
    )
    assert result.setting is MohSetting.FILE
    assert result.upload is not None and result.disclaimer is not None
    assert result.upload.original_name == "My Song.mp3"
    assert result.upload.size == 8 and result.disclaimer.accepted_by == "alice"
    assert result.disclaimer.sha256 == result.upload.sha256 and result.disclaimer.accepted_at == NOW
    assert sorted(r.extension for r in result.renditions) == ["alaw", "g722", "sln", "sln16", "ulaw"]
    assert svc.rendition_bytes("acme", "ulaw") == b"abcdefghulaw"
    assert [e.action for e in svc.catalog.audit("acme")] == ["upload"]


def test_failed_conversion_keeps_previous_music(fake: tuple[MohService, FakeConverter]) -> None:
    svc, converter = fake
    before = svc.upload("acme", io.BytesIO(b"first..."), accept_disclaimer=True, accepted_by="tester")
    converter.fail = UploadRejected(Rejection.UNDECODABLE, "bad")
    with pytest.raises(UploadRejected):
        svc.upload("acme", io.BytesIO(b"second.."), accept_disclaimer=True, accepted_by="tester")
    assert svc.show("acme") == before
    assert svc.blobs.collect(svc.catalog.referenced_blobs) == 0


def test_replace_then_delete_collects_old_blobs(fake: tuple[MohService, FakeConverter]) -> None:
    svc, _ = fake
    first = svc.upload("acme", io.BytesIO(b"first..."), accept_disclaimer=True, accepted_by="tester")
    assert first.upload is not None
    second = svc.upload("acme", io.BytesIO(b"second.."), accept_disclaimer=True, accepted_by="tester")
    assert svc.blobs.exists(first.upload.sha256) and second.previous == first.upload  # kept for "restore"
    third = svc.upload("acme", io.BytesIO(b"third..."), accept_disclaimer=True, accepted_by="tester")
    assert third.upload is not None and second.upload is not None
    assert not svc.blobs.exists(first.upload.sha256) and svc.blobs.exists(second.upload.sha256)
    deleted = svc.delete("acme")
    assert deleted.setting is MohSetting.DEFAULT and deleted.moh_class("tenant-") == "default"
    assert deleted.previous == third.upload and not svc.blobs.exists(second.upload.sha256)
    assert svc.catalog.referenced_blobs() == {third.upload.sha256, *(r.sha256 for r in third.renditions)}
    assert [e.action for e in svc.catalog.audit("acme")] == ["upload", "upload", "upload", "delete"]
    with pytest.raises(NoTenantFile, match="default music"):
        svc.rendition_bytes("acme", "sln16")
    assert svc.delete("acme").setting is MohSetting.DEFAULT  # idempotent
    assert svc.delete("never-seen").setting is MohSetting.DEFAULT


def test_a_draft_changes_nothing_until_saved_then_restore_undoes_the_save(
    fake: tuple[MohService, FakeConverter],
) -> None:
    svc, converter = fake
    first = svc.upload("acme", io.BytesIO(b"first..."), accept_disclaimer=True, accepted_by="tester")
    draft = svc.make_draft("acme", io.BytesIO(b"draft..."), "new.mp3")
    assert converter.calls == 2 and svc.show("acme") == first  # callers hear the same file
    assert draft.upload.original_name == "new.mp3" and draft.upload.analysis  # the fake's analysis
    assert svc.draft("acme", draft.draft_id) == draft
    with pytest.raises(NoSuchDraft):
        svc.draft("beta", draft.draft_id)  # never another tenant's
    with pytest.raises(DisclaimerRequired):
        svc.save_draft("acme", draft.draft_id, accept_disclaimer=False, accepted_by="tester")
    saved = svc.save_draft("acme", draft.draft_id, accept_disclaimer=True, accepted_by="admin")
    assert saved.upload is not None and saved.upload.sha256 == draft.upload.sha256 and saved.previous == first.upload
    assert (
        saved.renditions == draft.renditions
        and saved.disclaimer is not None
        and saved.disclaimer.accepted_by == "admin"
    )
    with pytest.raises(NoSuchDraft):
        svc.save_draft("acme", draft.draft_id, accept_disclaimer=True, accepted_by="admin")  # saved once
    restored = svc.restore("acme", accept_disclaimer=True, accepted_by="oops")
    assert restored.upload == first.upload and restored.previous == saved.upload
    assert svc.blobs.exists(saved.renditions[0].sha256)  # what restore replaced can be restored in turn
    with pytest.raises(NothingToRestore):
        svc.restore("beta", accept_disclaimer=True, accepted_by="x")


def test_drafts_are_bounded_and_expire(fake: tuple[MohService, FakeConverter]) -> None:
    svc, _ = fake
    drafts = [svc.make_draft("acme", io.BytesIO(f"draft {n}".encode())) for n in range(3)]
    with pytest.raises(TooManyDrafts, match="3 drafts"):
        svc.make_draft("acme", io.BytesIO(b"one more"))
    svc.drop_draft("acme", drafts[0].draft_id)
    with pytest.raises(NoSuchDraft):
        svc.drop_draft("acme", drafts[0].draft_id)
    kept = svc.make_draft("acme", io.BytesIO(b"one more"))
    files = kept.renditions[0].sha256
    assert svc.blobs.exists(files)
    svc.clock = lambda: NOW + timedelta(hours=2)  # past draft_ttl_s
    with pytest.raises(NoSuchDraft):
        svc.draft("acme", kept.draft_id)
    svc.collect_garbage()
    assert not svc.blobs.exists(files)  # an expired draft's files go with it


def test_invalid_tenant_everywhere(fake: tuple[MohService, FakeConverter]) -> None:
    svc, converter = fake
    call: Callable[[], object]
    for call in (
        lambda: svc.upload("../x", io.BytesIO(b"x"), accept_disclaimer=True, accepted_by="tester"),
        lambda: svc.show("a]b"),
        lambda: svc.delete(""),
    ):
        with pytest.raises(InvalidTenantId):
            call()
    assert converter.calls == 0


def test_clean_original_name() -> None:
    assert clean_original_name("C:\\music\\hold.mp3") == "hold.mp3"
    assert clean_original_name("") == "upload"
    assert len(clean_original_name("a" * 1000)) == 255
