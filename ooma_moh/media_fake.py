"""A converter without ffmpeg, beside the real one (:class:`~ooma_moh.media.FfmpegConverter`):
for unit tests of what sits above the conversion (the service, the HTTP API, the page).

It understands one made-up format, a first line ``FAKE-AUDIO <milliseconds>``, and writes every
rendition with the size the real converter's would have (a repeating ramp, so bytes can be
compared); anything else is refused the way ffmpeg's refusals are (``unrecognised_format``).
Its analysis has every key of the real one (:func:`ooma_moh.analysis.analysis_dict`), plausible
values for a clean file of that length, and no warnings; nothing is trimmed or crossfaded away,
so the renditions last exactly the milliseconds asked for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import UploadRejected
from .media_rules import Conversion
from .model import RENDITION_FORMATS
from .rejections import Rejection

MAGIC = re.compile(rb"FAKE-AUDIO (\d{1,7})\n")
RAMP = bytes(range(251))


def fake_analysis(duration_ms: int) -> dict[str, Any]:
    """What the fake converter says it found: the real analysis's keys, a clean file."""
    return {
        "loudness_lufs_in": -16.0,
        "loudness_lufs_out": -20.0,
        "true_peak_dbtp_in": -1.5,
        "clipped_ratio": 0.0,
        "dc_offset": 0.0,
        "silence_trimmed_ms": {"start": 0, "end": 0},
        "mono_loss_db": 0.0,
        "phone_band_ratio": 0.8,
        "duration_ms": duration_ms,
        "loop_seam": "crossfaded",
        "warnings": [],
    }


def fake_audio(duration_ms: int) -> bytes:
    """An upload the fake converter accepts, lasting ``duration_ms``."""
    return b"FAKE-AUDIO %d\n" % duration_ms


class FakeConverter:
    """Counts its conversions in ``converted``."""

    def __init__(self) -> None:
        self.converted = 0

    def convert(self, source: Path, workdir: Path) -> Conversion:
        match = MAGIC.match(source.read_bytes()[:32])
        if match is None or int(match.group(1)) == 0:
            raise UploadRejected(Rejection.UNRECOGNISED_FORMAT, "the file is not in an audio format we can read")
        duration_ms = int(match.group(1))
        files = {}
        for fmt in RENDITION_FORMATS:
            size = fmt.expected_bytes(fmt.sample_rate * duration_ms // 1000)
            path = workdir / f"moh.{fmt.extension}"
            path.write_bytes((RAMP * (size // len(RAMP) + 1))[:size])
            files[fmt.extension] = path
        self.converted += 1
        return Conversion("fake", duration_ms, files, fake_analysis(duration_ms))
