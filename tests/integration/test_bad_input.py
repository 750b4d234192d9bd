"""Bad uploads get a specific error and leave the tenant's previous music exactly as it was."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from ooma_moh.errors import InvalidTenantId, UploadRejected
from ooma_moh.service import MohService
from tests.audio import ffmpeg, make_audio, tone

Maker = Callable[[Path], Path]


def _bytes(name: str, data: bytes) -> Maker:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path
    return make


def _truncated_mp3(tmp: Path) -> Path:
    good = tone(tmp / "good.mp3", 300, seconds=6, container="mp3")
    data = good.read_bytes()
    return _bytes("cut.mp3", data[: len(data) // 2])(tmp)


def _playlist(kind: str) -> Maker:
    def make(tmp: Path) -> Path:
        target = tone(tmp / "secret.mp3", 300, seconds=3, container="mp3")
        if kind == "hls":
            text = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\n{target}\n#EXT-X-ENDLIST\n"
        elif kind == "concat":
            text = f"ffconcat version 1.0\nfile '{target}'\n"
        else:  # a playlist hidden behind an ID3 tag, so that it sniffs as MP3
            text = "ID3\x03\x00\x00\x00\x00\x00\x00" + f"#EXTM3U\n#EXTINF:3,\n{target}\n"
        return _bytes("playlist.mp3", text.encode())(tmp)
    return make


def _wav_zero_channels(tmp: Path) -> Path:
    data = b"\x00" * 16000
    fmt = struct.pack("<HHIIHH", 1, 0, 8000, 0, 0, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return _bytes("zero.wav", b"RIFF" + struct.pack("<I", len(body)) + body)(tmp)


def _forty_minutes(tmp: Path) -> Path:
    path = tmp / "long.mp3"  # 8 kbit/s keeps 40 minutes under the size limit
    ffmpeg("-f", "lavfi", "-i", "sine=f=200:sample_rate=8000:d=2400", "-ac", "1", "-c:a", "libmp3lame",
           "-b:a", "8k", str(path))
    assert path.stat().st_size < 5 * 1024 * 1024
    return path


BAD_UPLOADS: dict[str, tuple[Maker, str]] = {
    "empty": (_bytes("empty.mp3", b""), "empty"),
    "one byte": (_bytes("one.mp3", b"\xff"), "unrecognised_format"),
    "5,242,881 bytes": (_bytes("big.wav", b"RIFF" + b"\x00" * (5 * 1024 * 1024 - 3)), "too_large"),
    "random bytes": (_bytes("noise.mp3", bytes(range(256)) * 64 + os.urandom(4096)), "unrecognised_format"),
    "truncated mp3": (_truncated_mp3, "truncated"),
    "text named .mp3": (_bytes("notes.mp3", b"These are not the droids you are looking for.\n" * 20), "unrecognised_format"),
    "hls playlist named .mp3": (_playlist("hls"), "unrecognised_format"),
    "concat playlist named .mp3": (_playlist("concat"), "unrecognised_format"),
    "playlist behind an ID3 tag": (_playlist("id3"), "undecodable"),
    "wav with 0 channels": (_wav_zero_channels, "undecodable"),
    "40 minutes": (_forty_minutes, "too_long"),
    "0.5 s": (lambda tmp: tone(tmp / "short.wav", 440, seconds=0.5), "too_short"),
    "silence": (lambda tmp: make_audio(tmp / "silent.wav", source="anullsrc=r=8000:cl=mono", seconds=3,
                                       container="wav", channels=1, rate=8000), "silent"),
}


@pytest.fixture
def tenant_with_music(service: MohService, tmp_path: Path) -> tuple[MohService, object, set[str]]:
    before = service.upload("acme", tone(tmp_path / "good.wav", 523, seconds=2), accept_disclaimer=True, accepted_by="tester")
    stored = {p.name for p in service.blobs.root.glob("??/*")}
    return service, before, stored


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_rejected_and_changes_nothing(tenant_with_music, tmp_path: Path, case: str) -> None:
    service, before, stored = tenant_with_music
    maker, reason = BAD_UPLOADS[case]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path = maker(bad_dir)
    with pytest.raises(UploadRejected) as info:
        service.upload("acme", path, accept_disclaimer=True, accepted_by="tester")
    assert info.value.reason == reason, str(info.value)
    assert str(info.value) and "\n" not in str(info.value)
    assert service.show("acme") == before
    assert {p.name for p in service.blobs.root.glob("??/*")} == stored
    for rendition in before.renditions:
        assert service.blobs.exists(rendition.sha256)
    assert list(service.blobs.scratch_root.iterdir()) == []


@pytest.mark.parametrize("tenant", ["a]b", "a\nb", "../x", "", "x" * 65])
def test_invalid_tenant_ids_change_nothing(tenant_with_music, tmp_path: Path, tenant: str) -> None:
    service, before, stored = tenant_with_music
    with pytest.raises(InvalidTenantId):
        service.upload(tenant, tone(tmp_path / "ok.wav", 440), accept_disclaimer=True, accepted_by="tester")
    assert [t.tenant_id for t in service.list()] == ["acme"]
    assert service.show("acme") == before
