"""Bad uploads get a specific error and leave the tenant's previous music exactly as it was."""

from __future__ import annotations

import dataclasses
import os
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from ooma_moh.config import Settings
from ooma_moh.errors import InvalidTenantId, UploadRejected
from ooma_moh.model import TenantMoh
from ooma_moh.service import MohService
from tests.audio import ffmpeg, make_audio, tone
from tests.ebml import BAD_WEBMS

if TYPE_CHECKING:  # click is imported by the fixture that runs it
    from click.testing import Result

Maker = Callable[[Path], Path]


def NOISE(n: int) -> bytes:
    """Deterministic garbage: the same bytes every run, so a case cannot pass by luck."""
    return random.Random(n).randbytes(n)


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


def _wav(name: str, rate: int, channels: int, data: bytes, bits: int = 16, declared: int | None = None) -> Maker:
    """A PCM WAV with any header values (the fields an attacker controls)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    return _bytes(name, b"RIFF" + struct.pack("<I", len(body)) + body)


def _cover_only_mp3(tmp: Path) -> Path:
    """An ID3v2.3 tag holding one picture (APIC frame), and no audio at all."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x64:d=1", "-frames:v", "1", str(tmp / "c.jpg"))
    frame = b"\x00image/jpeg\x00\x03\x00" + (tmp / "c.jpg").read_bytes()
    frames = b"APIC" + struct.pack(">I", len(frame)) + b"\x00\x00" + frame
    size = len(frames)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return _bytes("cover-only.mp3", b"ID3\x03\x00\x00" + synchsafe + frames)(tmp)


def _video_only_mp4(tmp: Path) -> Path:
    path = tmp / "video.m4a"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x64:d=2", "-c:v", "mpeg4", "-f", "mp4", str(path))
    return path


def _flac_head(tmp: Path) -> Path:
    return _bytes("cut.flac", tone(tmp / "whole.flac", 440, container="flac").read_bytes()[:30])(tmp)


def _forty_minutes(tmp: Path) -> Path:
    path = tmp / "long.mp3"  # 8 kbit/s keeps 40 minutes under the size limit
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=f=200:sample_rate=8000:d=2400",
        "-ac",
        "1",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "8k",
        str(path),
    )
    assert path.stat().st_size < 5 * 1024 * 1024
    return path


BAD_UPLOADS: dict[str, tuple[Maker, str]] = {
    "empty": (_bytes("empty.mp3", b""), "empty"),
    "one byte": (_bytes("one.mp3", b"\xff"), "unrecognised_format"),
    "5,242,881 bytes": (_bytes("big.wav", b"RIFF" + b"\x00" * (5 * 1024 * 1024 - 3)), "too_large"),
    "random bytes": (_bytes("noise.mp3", bytes(range(256)) * 64 + os.urandom(4096)), "unrecognised_format"),
    "truncated mp3": (_truncated_mp3, "truncated"),
    "text named .mp3": (
        _bytes("notes.mp3", b"These are not the droids you are looking for.\n" * 20),
        "unrecognised_format",
    ),
    "hls playlist named .mp3": (_playlist("hls"), "unrecognised_format"),
    "concat playlist named .mp3": (_playlist("concat"), "unrecognised_format"),
    "playlist behind an ID3 tag": (_playlist("id3"), "undecodable"),
    "wav with 0 channels": (_wav_zero_channels, "undecodable"),
    "40 minutes": (_forty_minutes, "too_long"),
    "0.5 s": (lambda tmp: tone(tmp / "short.wav", 440, seconds=0.5), "too_short"),
    "silence": (
        lambda tmp: make_audio(
            tmp / "silent.wav", source="anullsrc=r=8000:cl=mono", seconds=3, container="wav", channels=1, rate=8000
        ),
        "silent",
    ),
    # issue 8: 3,444 bytes at 1 Hz used to decode as 28 min 20 s (82 s CPU, 901 MB)
    "1 Hz wav, 3,444 bytes": (_wav("onehz.wav", 1, 1, bytes(128 + i % 7 for i in range(3400)), bits=8), "sample_rate"),
    "7,999 Hz wav": (_wav("low.wav", 7999, 1, b"\x00\x10" * 24000), "sample_rate"),
    "2 GHz wav": (_wav("fast.wav", 2_000_000_000, 1, b"\x00\x10" * 24000), "sample_rate"),
    "40-channel wav": (_wav("many.wav", 8000, 40, b"\x00\x10" * 40 * 8000), "channels"),
    "cover art, no audio": (_cover_only_mp3, "undecodable"),
    "video, no audio": (_video_only_mp4, "no_audio"),
    "zip named .mp3": (_bytes("x.mp3", b"PK\x03\x04" + NOISE(2000)), "unrecognised_format"),
    "png named .wav": (_bytes("x.wav", b"\x89PNG\r\n\x1a\n" + NOISE(2000)), "unrecognised_format"),
    "html named .m4a": (_bytes("x.m4a", b"<!doctype html><script>alert(1)</script>" * 30), "unrecognised_format"),
    "flac header then garbage": (_bytes("x.flac", b"fLaC" + NOISE(8000)), "undecodable"),
    "adts header then garbage": (_bytes("x.aac", b"\xff\xf1\x50\x80" + NOISE(8000)), "undecodable"),
    "ogg page header then garbage": (_bytes("x.ogg", b"OggS\x00\x02" + NOISE(8000)), "undecodable"),
    "flac cut inside its header": (_flac_head, "undecodable"),
    **BAD_WEBMS,
}


#: The ``tenant_with_music`` fixture: the service, acme's music, the blobs stored.
TenantWithMusic = tuple[MohService, TenantMoh, set[str]]


@pytest.fixture
def tenant_with_music(service: MohService, tmp_path: Path) -> TenantWithMusic:
    before = service.upload(
        "acme", tone(tmp_path / "good.wav", 523, seconds=2), accept_disclaimer=True, accepted_by="tester"
    )
    stored = service.blobs.stored()
    return service, before, stored


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_rejected_and_changes_nothing(
    tenant_with_music: TenantWithMusic, tmp_path: Path, case: str
) -> None:
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
    assert service.blobs.stored() == stored
    for rendition in before.renditions:
        assert service.blobs.exists(rendition.sha256)
    assert list(service.blobs.scratch_root.iterdir()) == []


@pytest.mark.parametrize("container", ["mp3", "m4a"])
def test_cover_art_is_ignored_never_decoded(tenant_with_music: TenantWithMusic, tmp_path: Path, container: str) -> None:
    """Most bought or exported music files carry a picture: the audio is accepted, the picture's
    decoder is never opened (it is not on the codec whitelist)."""
    service, _, _ = tenant_with_music
    audio = tone(tmp_path / f"plain.{container}", 440, seconds=3, container=container)
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x64:d=1", "-frames:v", "1", str(tmp_path / "c.jpg"))
    art = tmp_path / f"art.{container}"
    ffmpeg(
        "-i",
        str(audio),
        "-i",
        str(tmp_path / "c.jpg"),
        "-map",
        "0",
        "-map",
        "1",
        "-c",
        "copy",
        "-disposition:v",
        "attached_pic",
        *(["-id3v2_version", "3"] if container == "mp3" else []),
        str(art),
    )
    result = service.upload("acme", art, accept_disclaimer=True, accepted_by="tester")
    assert result.upload is not None
    assert result.upload.container == container and 2650 <= result.upload.duration_ms <= 2850  # 3 s - 250 ms crossfade


def test_a_lying_wav_header_gets_the_real_duration(tenant_with_music: TenantWithMusic, tmp_path: Path) -> None:
    """A WAV declaring 4 MB of data but holding 2 s is judged on what decodes, not on its header."""
    service, _, _ = tenant_with_music
    noise = (bytes(range(0, 256, 2)) * 250)[:32000]
    path = _wav("liar.wav", 8000, 1, noise, declared=4_000_000)(tmp_path)
    uploaded = service.upload("acme", path, accept_disclaimer=True, accepted_by="tester").upload
    assert uploaded is not None and uploaded.duration_ms == 2000 - 250  # the loop's crossfade overlaps 250 ms


def test_lowest_accepted_rate_is_accepted(tenant_with_music: TenantWithMusic, tmp_path: Path) -> None:
    service, _, _ = tenant_with_music
    path = make_audio(
        tmp_path / "8k.wav", source="sine=f=440:sample_rate=8000", seconds=2, container="wav", channels=1, rate=8000
    )
    uploaded = service.upload("acme", path, accept_disclaimer=True, accepted_by="tester").upload
    assert uploaded is not None and uploaded.duration_ms == 2000 - 250  # the loop's crossfade overlaps 250 ms


@pytest.mark.parametrize("tenant", ["a]b", "a\nb", "../x", "", "x" * 65])
def test_invalid_tenant_ids_change_nothing(tenant_with_music: TenantWithMusic, tmp_path: Path, tenant: str) -> None:
    service, before, stored = tenant_with_music
    with pytest.raises(InvalidTenantId):
        service.upload(tenant, tone(tmp_path / "ok.wav", 440), accept_disclaimer=True, accepted_by="tester")
    assert [t.tenant_id for t in service.list()] == ["acme"]
    assert service.show("acme") == before


# -- the command line: arguments an operator (or a script fed by users) can get wrong --------------


class CliRun(Protocol):
    """``ooma-moh --home <home> ARGS``, checked to exit with ``code`` (and, for 1, one error line)."""

    def __call__(self, *args: str, code: int = 0) -> Result: ...


#: The ``cli_home`` fixture: a runner on a home where acme has music, and the test's directory.
CliHome = tuple[CliRun, Path]


@pytest.fixture
def cli_home(tmp_path: Path) -> Iterator[CliHome]:
    from click.testing import CliRunner

    from ooma_moh.cli import main

    home = tmp_path / "home"
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(main, ["--home", str(home), *args], catch_exceptions=False)
        assert result.exit_code == code, (result.stdout, result.stderr)
        if code == 1:
            assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
        return result

    run("upload", "acme", str(tone(tmp_path / "good.wav", 523, seconds=2)), "--accept-disclaimer", "--by", "alice")
    before = run("show", "acme", "--json").stdout
    yield run, tmp_path
    assert run("show", "acme", "--json").stdout == before  # nothing changed


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.mp3")
    return tmp / "pipe.mp3"


@pytest.mark.parametrize(
    "case, make, message, code",
    [
        ("file name of 300 characters", lambda tmp: tmp / ("a" * 300 + ".mp3"), "file name too long", 1),
        ("a directory", lambda tmp: tmp, "is a directory", 2),  # click's usage error
        ("a named pipe", _fifo, "not a readable file", 1),
        ("a missing file", lambda tmp: tmp / "nope.mp3", "not a readable file", 1),
    ],
)
def test_unreadable_upload_paths(cli_home: CliHome, case: str, make: Maker, message: str, code: int) -> None:
    run, tmp = cli_home
    result = run("upload", "acme", str(make(tmp)), "--accept-disclaimer", code=code)
    assert message in result.stderr.lower()


@pytest.mark.parametrize(
    "by, message",
    [
        ("alice\nFORGED line", "control characters"),
        ("\x1b[31mred\x1b[0m", "control characters"),
        ("x" * 100_000, "100,000 characters"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_disclaimer_acceptor_is_validated(cli_home: CliHome, by: str, message: str) -> None:
    run, tmp = cli_home
    result = run("upload", "acme", str(tone(tmp / "new.wav", 660)), "--accept-disclaimer", "--by", by, code=1)
    assert message in result.stderr
    assert "\x1b" not in result.stderr


def test_default_acceptor_is_the_unix_user_said_out_loud(cli_home: CliHome) -> None:
    import getpass
    import json

    run, tmp = cli_home
    assert "the Unix user" in run("upload", "--help").stdout
    shown = json.loads(run("upload", "other", str(tone(tmp / "o.wav", 660)), "--accept-disclaimer", "--json").stdout)
    assert shown["disclaimer"]["accepted_by"] == getpass.getuser()


@pytest.mark.parametrize("limit, value", [("ffmpeg_cpu_s", 1), ("ffmpeg_wall_s", 1)])
def test_ffmpeg_limits_stop_a_costly_input(settings: Settings, tmp_path: Path, limit: str, value: float) -> None:
    """The worst accepted input (30 min at 8 kHz, ~13 s of CPU) under a tiny limit: refused as
    too_costly, whichever limit hits (CPU seconds, wall clock)."""
    from ooma_moh.app import build_service

    path = tmp_path / "worst.mp3"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=color=pink:amplitude=0.2:seed=5:d=1790:r=8000",
        "-ac",
        "1",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "8k",
        str(path),
    )
    fields: dict[str, Any] = {limit: value}  # the field the parameters name
    service = build_service(dataclasses.replace(settings, **fields))
    with pytest.raises(UploadRejected) as info:
        service.upload("acme", path, accept_disclaimer=True, accepted_by="tester")
    assert info.value.reason == "too_costly", str(info.value)
    assert list(service.blobs.scratch_root.iterdir()) == [] and service.list() == []
    service.catalog.close()


def test_memory_limit_too_low_for_ffmpeg_is_the_servers_problem(settings: Settings, tmp_path: Path) -> None:
    """ffmpeg needs ~400 MB of address space just to load its libraries: a lower limit is an
    operator's mistake, reported as such, never as the upload's fault."""
    from ooma_moh.app import build_service
    from ooma_moh.errors import MediaToolError

    service = build_service(dataclasses.replace(settings, ffmpeg_memory_mb=128))
    with pytest.raises(MediaToolError, match="ffmpeg_memory_mb=128"):
        service.upload("acme", tone(tmp_path / "ok.wav", 440), accept_disclaimer=True, accepted_by="tester")
    service.catalog.close()
