"""Upload validation and conversion: the only module that runs ffmpeg or uses pydub.

An upload is never trusted: its container is recognised from its first bytes (not its name or
headers), and ffmpeg is then pinned to that one demuxer, to the decoders that container may hold,
and to the ``file`` protocol, so a playlist disguised as audio is rejected instead of followed.

Conversion is two ffmpeg runs over the upload:

1. *decode + measure*: decode once (at most ``max_duration_s`` + 1 s of it) to 16 kHz mono float
   PCM in the work directory, while an ``ebur128`` branch measures integrated loudness and true
   peak of that same signal;
2. *encode*: apply the gain that brings it to the target loudness (and a limiter only when the
   gain would push the true peak over the ceiling), then write the five renditions in one pass.

The measured values are rounded before use, so the same input and settings give byte-identical
renditions.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import MediaToolError, UploadRejected

PCM_RATE = 16000
PCM_BYTES_PER_SAMPLE = 4  # f32le mono

#: container -> (ffmpeg demuxer, format whitelist entry, decoders it may use)
CONTAINERS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "wav", "pcm_s16le,pcm_s24le,pcm_s32le,pcm_f32le,pcm_f64le,pcm_u8,pcm_mulaw,pcm_alaw"),
    "mp3": ("mp3", "mp3", "mp3float,mp3"),
    "ogg": ("ogg", "ogg", "vorbis,libvorbis,opus,libopus"),
    "flac": ("flac", "flac", "flac"),
    "m4a": ("mov", "mov,mp4,m4a,3gp,3g2,mj2", "aac,aac_fixed,alac"),
    "aac": ("aac", "aac", "aac,aac_fixed"),
}

_LOUDNESS_RE = re.compile(r"^\s*(?:\[info\]\s*)?I:\s+(-?[\d.]+|-?inf)\s+LUFS", re.M)
_PEAK_RE = re.compile(r"^\s*(?:\[info\]\s*)?Peak:\s+(-?[\d.]+|-?inf)\s+dBFS", re.M)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
SILENCE_LUFS = -69.0
MAX_LIMIT_ROUNDS = 4
#: The limiter sees samples, not true peaks, and G.722 ADPCM overshoots on sharp transients.
LIMITER_MARGIN_DB = 2.0


def sniff_container(head: bytes) -> str:
    """Name the container of an upload from its first bytes, or raise ``UploadRejected``."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "m4a"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x03
        return "aac" if layer == 0 else "mp3"
    raise UploadRejected(
        "unrecognised_format",
        "not a supported audio file: upload WAV, MP3, OGG (Vorbis/Opus), FLAC or M4A/AAC",
    )


def ffmpeg_errors(log: str) -> list[str]:
    """The error lines of an ffmpeg log written with ``-loglevel level+...``."""
    return [line for line in log.splitlines() if "[error]" in line or "[fatal]" in line]


def declared_duration_s(log: str) -> float | None:
    """The duration the container itself declares, or None if it only estimated one."""
    if "Estimating duration from bitrate" in log:
        return None
    match = _DURATION_RE.search(log)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse_ebur128(log: str) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBFS) from an ``ebur128`` summary."""
    loudness = _LOUDNESS_RE.findall(log)
    peak = _PEAK_RE.findall(log)
    if not loudness or not peak:
        raise MediaToolError("ffmpeg ebur128 printed no loudness summary")
    return float(loudness[-1]), float(peak[-1])


@dataclass(frozen=True)
class LoudnessPlan:
    """The processing that takes a measured signal to the configured loudness and ceiling."""

    gain_db: float
    limit_linear: float | None

    def filters(self) -> str:
        """The ffmpeg filter chain for this plan."""
        chain = f"volume={self.gain_db:.2f}dB:precision=double"
        if self.limit_linear is not None:
            chain += f",alimiter=limit={self.limit_linear:.5f}:level=0:latency=1:attack=5:release=50"
        return chain


def plan_loudness(lufs: float, true_peak: float, target_lufs: float, ceiling_dbtp: float) -> LoudnessPlan:
    """Gain to ``target_lufs``; a limiter under the ceiling if the peak would exceed it.

    The limiter works on samples and G.722 overshoots, hence the margin (see LIMITER_MARGIN_DB).
    """
    gain = round(target_lufs - lufs, 2)
    if true_peak + gain <= ceiling_dbtp:
        return LoudnessPlan(gain, None)
    return LoudnessPlan(gain, round(10 ** ((ceiling_dbtp - LIMITER_MARGIN_DB) / 20), 5))


@dataclass(frozen=True)
class Conversion:
    """The outcome of a successful conversion; ``files`` maps extension -> path."""

    container: str
    duration_ms: int
    input_lufs: float
    input_true_peak: float
    plan: LoudnessPlan
    files: dict[str, Path]


class FfmpegConverter:
    """Validates and converts uploads with a restricted ffmpeg."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _run(self, args: list[str]) -> tuple[int, str]:
        argv = [self.settings.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
        except FileNotFoundError:
            raise MediaToolError(f"ffmpeg not found ({self.settings.ffmpeg}): install ffmpeg") from None
        return proc.returncode, proc.stderr

    def decode(self, source: Path, pcm: Path) -> tuple[str, float, float, int]:
        """Decode ``source`` to 16 kHz mono f32le at ``pcm``; return container, LUFS, peak, samples."""
        with open(source, "rb") as fh:
            container = sniff_container(fh.read(64))
        demuxer, whitelist, decoders = CONTAINERS[container]
        limit = self.settings.max_duration_s + 1.0
        graph = (
            f"[0:a:0]aresample={PCM_RATE},aformat=sample_fmts=flt:channel_layouts=mono,"
            "asplit=2[pcm][m];[m]ebur128=peak=true[e];[e]anullsink"
        )
        code, log = self._run([
            "-protocol_whitelist", "file", "-format_whitelist", whitelist,
            "-codec_whitelist", decoders, "-f", demuxer, "-t", f"{limit:.3f}", "-i", str(source),
            "-filter_complex", graph, "-map", "[pcm]", "-f", "f32le", "-y", str(pcm),
        ])
        errors = ffmpeg_errors(log)
        if code != 0 or errors:
            detail = (errors or log.strip().splitlines() or ["no output"])[-1]
            detail = re.sub(r"^\[[^\]]*\]\s*(\[\w+\]\s*)?", "", detail.strip())
            raise UploadRejected("undecodable", f"the {container} file cannot be decoded: {detail}")
        samples = pcm.stat().st_size // PCM_BYTES_PER_SAMPLE
        self._check_duration(samples, declared_duration_s(log), container)
        lufs, peak = parse_ebur128(log)
        if lufs <= SILENCE_LUFS:
            raise UploadRejected("silent", "the file is silent")
        return container, lufs, peak, samples

    def _check_duration(self, samples: int, declared: float | None, container: str) -> None:
        seconds = samples / PCM_RATE
        if seconds > self.settings.max_duration_s:
            raise UploadRejected(
                "too_long", f"the audio is longer than the limit of {self.settings.max_duration_s:g} s"
            )
        if seconds < self.settings.min_duration_s:
            raise UploadRejected(
                "too_short",
                f"the audio lasts {seconds:.2f} s, under the minimum of {self.settings.min_duration_s:g} s",
            )
        if declared is not None and seconds < declared - max(0.5, 0.02 * declared):
            raise UploadRejected(
                "truncated",
                f"the {container} file is truncated: it declares {declared:.1f} s but only"
                f" {seconds:.1f} s decode",
            )

    def encode(self, pcm: Path, plan: LoudnessPlan, out_base: Path) -> dict[str, Path]:
        """Write the five renditions of ``pcm`` next to ``out_base``; return extension -> path."""
        graph = (
            f"[0:a]{plan.filters()},asplit=2[hi][lo];[hi]asplit=2[sln16][g722];"
            "[lo]aresample=8000,asplit=3[sln][ulaw][alaw]"
        )
        outputs = {
            "sln": ("pcm_s16le", "s16le"),
            "sln16": ("pcm_s16le", "s16le"),
            "ulaw": ("pcm_mulaw", "mulaw"),
            "alaw": ("pcm_alaw", "alaw"),
            "g722": ("adpcm_g722", "g722"),
        }
        files = {ext: out_base.with_name(f"{out_base.name}.{ext}") for ext in outputs}
        args = ["-f", "f32le", "-ar", str(PCM_RATE), "-ac", "1", "-i", str(pcm), "-filter_complex", graph]
        for ext, (codec, fmt) in outputs.items():
            args += ["-map", f"[{ext}]", "-c:a", codec, "-fflags", "+bitexact", "-f", fmt, "-y", str(files[ext])]
        code, log = self._run(args)
        if code != 0:
            raise MediaToolError(f"ffmpeg failed to encode renditions: {_last_line(log, code)}")
        return files

    def limit(self, pcm: Path, plan: LoudnessPlan, out: Path) -> tuple[float, float]:
        """Apply ``plan`` to ``pcm`` into ``out`` (same PCM format); return its LUFS and true peak."""
        graph = f"[0:a]{plan.filters()},asplit=2[pcm][m];[m]ebur128=peak=true[e];[e]anullsink"
        code, log = self._run(["-f", "f32le", "-ar", str(PCM_RATE), "-ac", "1", "-i", str(pcm),
                               "-filter_complex", graph, "-map", "[pcm]", "-f", "f32le", "-y", str(out)])
        if code != 0:
            raise MediaToolError(f"ffmpeg failed to limit: {_last_line(log, code)}")
        return parse_ebur128(log)

    def convert(self, source: Path, workdir: Path) -> Conversion:
        """Validate ``source`` and produce its renditions inside ``workdir``."""
        pcm = workdir / "decoded.f32"
        container, lufs, peak, samples = self.decode(source, pcm)
        target, ceiling = self.settings.loudness_lufs, self.settings.true_peak_dbtp
        plan = first_plan = plan_loudness(lufs, peak, target, ceiling)
        # Limiting lowers loudness: limit into a new PCM, re-measure, and plan the rest from there,
        # until the remaining gain is small or needs no limiter (peaky input only; rare).
        for round_ in range(MAX_LIMIT_ROUNDS):
            if plan.limit_linear is None or abs(plan.gain_db) < 0.3:
                break
            limited = workdir / f"limited{round_}.f32"
            lufs_now, peak_now = self.limit(pcm, plan, limited)
            pcm.unlink()
            pcm = limited
            plan = plan_loudness(lufs_now, peak_now, target, ceiling)
        files = self.encode(pcm, plan, workdir / "rendition")
        pcm.unlink()
        return Conversion(container, samples * 1000 // PCM_RATE, lufs, peak, first_plan, files)


def _last_line(log: str, code: int) -> str:
    lines = log.strip().splitlines()
    return lines[-1] if lines else f"exit {code}"


def write_wav(sln16: bytes, out: Path) -> None:
    """Write 16 kHz signed-linear mono audio as a WAV file (what ``listen`` gives an admin)."""
    from pydub import AudioSegment  # imported here: pydub warns at import when ffmpeg is absent

    AudioSegment(data=sln16, sample_width=2, frame_rate=16000, channels=1).export(str(out), format="wav")


def synth_sample(settings: Settings, out: Path, freq: float, seconds: float) -> Path:
    """Write a short MP3 of a ``freq`` Hz tone (the demo's sample upload)."""
    code = subprocess.run(
        [settings.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=f={freq}:sample_rate=44100:d={seconds}", "-af", "volume=-9dB", "-ac", "2",
         "-c:a", "libmp3lame", "-b:a", "128k", str(out)],
        check=False, capture_output=True, text=True,
    )
    if code.returncode != 0:
        raise MediaToolError(f"ffmpeg could not synthesise the sample: {code.stderr.strip()[-200:]}")
    return out
