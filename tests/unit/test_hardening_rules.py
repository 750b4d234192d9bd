"""Pure rules behind the hardening of issue 8: input stream limits, public error texts, rendition
sizes, the disclaimer acceptor, storage error codes; and the blob store's trash and lock."""

from __future__ import annotations

import errno
import fcntl
import io
import os
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.errors import InvalidActor, StorageError
from ooma_moh.ffmpeg import Run, storage_failure
from ooma_moh.media_rules import InputWatch, channel_count, check_rendition_size, public_detail
from ooma_moh.model import validate_actor
from ooma_moh.storage import BlobStore

INPUT = "[info] Input #0, {fmt}, from '/srv/x/original':\n"


def watch_lines(lines: list[str], settings: Settings | None = None) -> tuple[InputWatch, str | None]:
    watch = InputWatch(settings or Settings())
    stopped = None
    for line in lines:
        if (stopped := watch(line)) is not None:
            break
    return watch, stopped


@pytest.mark.parametrize(
    "stream, reason",
    [
        ("Audio: mp3, 44100 Hz, stereo, fltp, 128 kb/s", None),
        ("Audio: pcm_s16le ([1][0][0][0] / 0x0001), 8000 Hz, mono, s16, 128 kb/s", None),
        ("Audio: pcm_u8 ([1][0][0][0] / 0x0001), 1 Hz, mono, u8, 0 kb/s", "sample_rate"),
        ("Audio: pcm_s16le, 7999 Hz, mono, s16", "sample_rate"),
        ("Audio: pcm_s16le, 2000000000 Hz, mono, s16", "sample_rate"),
        ("Audio: pcm_s16le, 8000 Hz, 0 channels", "undecodable"),
        ("Audio: pcm_s16le, 8000 Hz, 40 channels, s16", "channels"),
        ("Audio: aac (LC), 48000 Hz, 7.1, fltp", None),
        ("Audio: pcm_s16le, 48000 Hz, 22.2, s16", "channels"),
        ("Audio: pcm_s16le, 48000 Hz, weird(layout), s16", "channels"),
        ("Audio: pcm_s16le, mono, s16", "undecodable"),
    ],
)
def test_first_audio_stream_rules(stream: str, reason: str | None) -> None:
    watch, stopped = watch_lines([INPUT.format(fmt="wav"), f"[info]   Stream #0:0: {stream}\n"])
    assert stopped == reason
    assert (watch.rejection.reason if watch.rejection else None) == reason


def test_only_the_input_section_is_judged() -> None:
    _, stopped = watch_lines(
        [
            INPUT.format(fmt="wav"),
            "[info]   Stream #0:0: Audio: pcm_s16le, 8000 Hz, mono",
            "[info] Output #0, f32le, to '/x':",
            "[info]   Stream #0:0: Audio: pcm_f32le, 1 Hz, mono",
        ]
    )
    assert stopped is None


def test_cover_art_refusals_are_not_upload_errors() -> None:
    watch, stopped = watch_lines(
        [
            INPUT.format(fmt="mp3"),
            "[info]   Stream #0:0: Audio: mp3, 44100 Hz, mono, fltp, 64 kb/s",
            "[info]   Stream #0:1: Video: mjpeg, none(bt470bg/unknown/unknown), 90k tbr (attached pic)",
        ]
    )
    assert stopped is None and watch.other_codecs == {"mjpeg"}
    errors = [
        "[mjpeg @ 0x5] [error] Codec (mjpeg) not on whitelist 'mp3float,mp3'",
        "[mp3 @ 0x5] [error] Codec (vorbis) not on whitelist 'mp3float,mp3'",
        "[mp3 @ 0x5] [error] Header missing",
    ]
    assert watch.upload_errors(errors) == errors[1:]


def test_a_second_audio_stream_is_never_judged_as_the_first() -> None:
    watch, stopped = watch_lines(
        [
            INPUT.format(fmt="mov"),
            "[info]   Stream #0:0: Audio: aac, 48000 Hz, stereo",
            "[info]   Stream #0:1: Audio: aac, 1 Hz, mono",
        ]
    )
    assert stopped is None and watch.other_codecs == {"aac"}


@pytest.mark.parametrize(
    "layout, count",
    [("mono", 1), ("stereo", 2), ("5.1(side)", 6), ("3 channels", 3), ("12 channels (FL+FR)", 12), ("nonsense", None)],
)
def test_channel_count(layout: str, count: int | None) -> None:
    assert channel_count(layout) == count


@pytest.mark.parametrize(
    "line, shown",
    [
        ("[mp3 @ 0x55] [error] Header missing", "header missing"),
        (
            "[error] /home/ooma/blobs/tmp/1-2/original: Invalid data found when processing input",
            "invalid data found when processing input",
        ),
        ("[fatal] Error initializing complex filtergraph [0:a:0]aresample=16000", None),
        ("[error] Unable to find a suitable output format for '/srv/x'", None),
        ("[error] " + "x" * 200, None),
    ],
)
def test_public_detail_hides_paths_graphs_and_addresses(line: str, shown: str | None) -> None:
    text = public_detail(line)
    assert text == (shown or "the audio data is damaged or uses an unsupported encoding")
    assert "/" not in text and "0x" not in text


@pytest.mark.parametrize(
    "ext, size, ok",
    [
        ("sln16", 320000, True),
        ("sln", 160000, True),
        ("ulaw", 80000, True),
        ("g722", 80000, True),
        ("sln", 160064, True),
        ("sln", 0, False),
        ("alaw", 80000 - 32768, False),
        ("sln16", 320000 + 4096, False),
    ],
)
def test_rendition_size_against_the_decoded_samples(ext: str, size: int, ok: bool) -> None:
    problem = check_rendition_size(ext, size, 160000)  # 10 s at 16 kHz
    assert (problem is None) == ok, problem


@pytest.mark.parametrize("value", ["", "   ", "a\nb", "x\x1b[31mred", "tab\there", "z" * 129, None, 42])
def test_invalid_actors(value: object) -> None:
    with pytest.raises(InvalidActor):
        validate_actor(value)


def test_valid_actor_is_trimmed_and_may_be_unicode() -> None:
    assert validate_actor("  Zoë Müller <zoe@example.com> ") == "Zoë Müller <zoe@example.com>"
    assert validate_actor("z" * 128) == "z" * 128


def test_storage_failures_in_ffmpeg_logs() -> None:
    assert storage_failure("[s16le @ 0x1] [error] Error writing trailer: No space left on device") == errno.ENOSPC
    assert storage_failure("[info] No space left on device in a title tag") is None
    assert storage_failure("[mp3 @ 0x1] [error] Header missing") is None


def test_storage_error_text_has_no_path_and_a_reason() -> None:
    error = StorageError.from_errno(errno.ENOSPC, "writing the renditions")
    assert error.reason == "disk_full" and "disk is full" in str(error) and "/" not in str(error)
    assert StorageError.from_errno(errno.EROFS, "x").reason == "read_only"
    assert StorageError.from_errno(None, "x").reason == "storage_error"


def test_limit_kills_are_recognised() -> None:
    assert Run(-24, "").killed_by_limit and Run(-9, "").killed_by_limit
    assert Run(1, "[error] Cannot allocate memory").killed_by_limit
    assert Run(0, "", "deadline").killed_by_limit
    assert not Run(1, "[error] Header missing").killed_by_limit


def _put(store: BlobStore, data: bytes) -> str:
    with store.scratch() as work:
        (work / "f").write_bytes(data)
        return store.put(work / "f")[0]


def test_collect_trashes_then_deletes_after_the_grace_period(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", grace_s=100)
    keep, drop = _put(store, b"keep"), _put(store, b"drop")
    assert store.collect(lambda: {keep}, now=1000.0) == 1
    assert not store.exists(drop) and (store.trash / drop).is_file()
    store.collect(lambda: {keep}, now=1099.0)
    assert (store.trash / drop).is_file()  # within the grace period
    store.collect(lambda: {keep}, now=1100.0)
    assert not (store.trash / drop).exists()
    with pytest.raises(StorageError) as info:
        store.read(drop)
    assert info.value.reason == "blob_missing" and "/" not in str(info.value)


def test_a_trashed_blob_comes_back_when_referenced_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", grace_s=100)
    sha = _put(store, b"music")
    store.collect(set, now=1000.0)
    assert not store.exists(sha)
    assert store.read(sha) == b"music"  # a restored catalog asks for it: back from the trash
    assert store.exists(sha)
    store.collect(set, now=1000.0)
    store.collect(lambda: {sha}, now=1000.0)  # the next clean-up also brings referenced ones back
    assert store.exists(sha)


def test_read_checks_the_content(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    sha = _put(store, b"music")
    os.chmod(store.path(sha), 0o644)
    store.path(sha).write_bytes(b"damaged")
    with pytest.raises(StorageError) as info:
        store.read(sha)
    assert info.value.reason == "blob_damaged"


def test_collect_reads_the_catalog_with_writers_locked_out(tmp_path: Path) -> None:
    """The clean-up race: the set of blobs in use must be read while no upload can commit. Each
    upload holds the store's lock shared from its first blob to its commit, so while
    ``referenced`` runs, taking the lock shared must be impossible."""
    store = BlobStore(tmp_path / "blobs")
    _put(store, b"music")
    seen = []

    def referenced() -> set[str]:
        with open(store._lock_path, "a+") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
                seen.append("writer could start")
            except BlockingIOError:
                seen.append("writers locked out")
        return set()

    store.collect(referenced)
    assert seen == ["writers locked out"]


def test_collect_is_skipped_while_an_upload_is_in_flight(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with store.scratch() as work:
        (work / "f").write_bytes(b"new")
        sha = store.put(work / "f")[0]
        called = []
        # records the call and answers no referenced blob: append's None is the point of the `or`
        assert store.collect(lambda: called.append(1) or set()) == 0  # type: ignore[func-returns-value]
        assert called == [] and store.exists(sha)


def test_read_only_store_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = BlobStore(root, writable=False)
    assert not root.exists() and not store.holds_files()
    writable = BlobStore(root)
    sha = _put(writable, b"x")
    assert BlobStore(root, writable=False).holds_files()
    writable.collect(set, now=0.0)
    assert BlobStore(root, writable=False).holds_files()  # trashed files still count
    assert BlobStore(root, writable=False).locate(sha) == root / "trash" / sha


def test_stage_read_error_is_the_uploads_fault(tmp_path: Path) -> None:
    from ooma_moh.app import build_service
    from ooma_moh.errors import UploadRejected

    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

    service = build_service(Settings(home=tmp_path / "home"))
    with pytest.raises(UploadRejected) as info:
        # a raw stream whose read fails stands for the upload's BinaryIO (upload only reads it)
        service.upload("acme", Broken(), accept_disclaimer=True, accepted_by="t")  # type: ignore[arg-type]
    assert info.value.reason == "unreadable"
    service.catalog.close()
