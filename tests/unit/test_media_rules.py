"""Pure parts of media handling: container sniffing, ffmpeg log parsing, the loudness plan."""

from __future__ import annotations

import pytest

from ooma_moh.errors import UploadRejected
from ooma_moh.ffmpeg import Run
from ooma_moh.media_rules import declared_duration_s, parse_ebur128, plan_loudness, sniff_container


@pytest.mark.parametrize(
    "head, container",
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02" + b"\x00" * 20, "ogg"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81", "webm"),  # EBML: WebM or Matroska
        (b"\x00\x00\x00\x20ftypM4A \x00\x00", "m4a"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64\x00", "mp3"),
        (b"\xff\xf1\x50\x80\x02", "aac"),
    ],
)
def test_sniff_known_containers(head: bytes, container: str) -> None:
    assert sniff_container(head) == container


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x00",
        b"#EXTM3U\n",
        b"ffconcat version 1.0\n",
        b"RIFF\x00\x00\x00\x00AVI ",
        b"hello world, this is text",
        b"\xff\x00",
    ],
)
def test_sniff_rejects_everything_else(head: bytes) -> None:
    with pytest.raises(UploadRejected) as info:
        sniff_container(head)
    assert info.value.reason == "unrecognised_format"


def test_declared_duration() -> None:
    assert declared_duration_s("[info]   Duration: 00:01:02.50, start: 0") == pytest.approx(62.5)
    assert declared_duration_s("Estimating duration from bitrate\n  Duration: 00:00:05.00,") is None
    assert declared_duration_s("  Duration: N/A, bitrate: N/A") is None


def test_run_errors_only_error_lines() -> None:
    log = "[info] Input #0\n[mp3 @ 0x1] [error] Header missing\n[warning] odd\n[fatal] boom\n"
    assert Run(0, log).errors() == ["[mp3 @ 0x1] [error] Header missing", "[fatal] boom"]


def test_parse_ebur128_summary() -> None:
    log = (
        "[Parsed_ebur128_0 @ 0x1] [info] Summary:\n[info] \n[info]   Integrated loudness:\n"
        "[info]     I:         -23.4 LUFS\n[info]     Threshold: -33.4 LUFS\n"
        "[info]   True peak:\n[info]     Peak:       -1.5 dBFS\n"
    )
    assert parse_ebur128(log) == (-23.4, -1.5)


def test_plan_gain_only_when_peak_fits() -> None:
    plan = plan_loudness(-30.0, -12.0, -20.0, -2.0)
    assert plan.gain_db == 10.0 and plan.limit_linear is None
    assert plan.filters() == "volume=10.00dB:precision=double"


def test_plan_limits_when_peak_would_exceed_ceiling() -> None:
    plan = plan_loudness(-30.0, -5.0, -20.0, -2.0)
    assert plan.gain_db == 10.0
    assert plan.limit_linear == pytest.approx(10 ** (-4 / 20), abs=1e-5)
    assert "alimiter" in plan.filters() and "level=0" in plan.filters()


def test_plan_subtracts_the_dc_offset_first() -> None:
    plan = plan_loudness(-30.0, -12.0, -20.0, -2.0, dc_offset=-0.012345)
    assert plan.dc_offset == -0.0123
    assert plan.filters() == "aeval=val(0)-(-0.0123):c=same,volume=10.00dB:precision=double"
    assert plan_loudness(-30.0, -12.0, -20.0, -2.0, dc_offset=0.00004).filters().startswith("volume=")
