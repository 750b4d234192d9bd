"""Music under a voice, from files to a file (``MohService.mix_draft``), in this order:

1. the voice — an admin's upload, never trusted — decoded by the restricted converter exactly as
   an upload is (:meth:`ooma_moh.media.FfmpegConverter.decode`: recognised by content, pinned
   demuxer and decoders, limits) to 16 kHz mono PCM;
2. the bed's files (operator's or ours: :mod:`ooma_moh.beds` says which and how ffmpeg reads each)
   decoded in one run, one after the other, to 16 kHz mono PCM;
3. :func:`ooma_moh.mix.mix_voice_over_bed` (levels, ducking, intro and outro);
4. the result written as a 32-bit float WAV, which then goes through the converter like any upload.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import Settings
from .errors import BedUnavailable, MediaToolError
from .media import FfmpegConverter
from .media_rules import PCM_RATE
from .mix import mix_voice_over_bed, run_tool
from .pcm import wav_header
from .storage.blobs import storage_errors


class FfmpegMixer:
    """:class:`ooma_moh.service.Mixer` with ffmpeg."""

    def __init__(self, settings: Settings, converter: FfmpegConverter) -> None:
        self.settings, self.converter = settings, converter

    def decode_bed(self, beds: list[tuple[Path, tuple[str, ...]]], out_pcm: Path) -> None:
        """Rule 2: the bed's files, one after the other, as 16 kHz mono f32le PCM."""
        args: list[str] = ["-protocol_whitelist", "file"]
        for path, options in beds:
            args += [*options, "-i", f"file:{path}"]
        chains = "".join(
            f"[{n}:a:0]aresample={PCM_RATE},aformat=sample_fmts=flt:channel_layouts=mono[b{n}];"
            for n in range(len(beds))
        )
        joined = "".join(f"[b{n}]" for n in range(len(beds)))
        graph = f"{chains}{joined}concat=n={len(beds)}:v=0:a=1[bed]"
        try:
            run_tool(
                self.settings,
                [*args, "-filter_complex", graph, "-map", "[bed]", "-f", "f32le", "-y", f"file:{out_pcm}"],
                "reading the music to put under the voice",
            )
        except MediaToolError as exc:  # the operator's files: say so, not "the upload"
            raise BedUnavailable(f"the music to put under the voice cannot be read: {exc}") from None

    def mix(self, voice: Path, beds: list[tuple[Path, tuple[str, ...]]], out_wav: Path, bed_level_db: float) -> None:
        """Rules 1-4: ``voice`` over ``beds`` into the WAV ``out_wav`` (scratch files beside it)."""
        work = out_wav.parent
        voice_pcm, bed_pcm, mixed = work / "voice.f32", work / "bed.f32", work / "mixed.f32"
        self.converter.decode(voice, voice_pcm)
        self.decode_bed(beds, bed_pcm)
        mix_voice_over_bed(self.settings, voice_pcm, [bed_pcm], mixed, bed_level_db)
        with storage_errors("writing the mix"):
            size = mixed.stat().st_size
            with open(out_wav, "wb") as out, open(mixed, "rb") as pcm:
                out.write(wav_header(size, PCM_RATE, float32=True))
                shutil.copyfileobj(pcm, out, 1 << 20)
            for scratch in (voice_pcm, bed_pcm, mixed):
                scratch.unlink(missing_ok=True)
