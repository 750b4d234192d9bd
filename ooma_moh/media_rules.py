"""What the converter decides from an upload's bytes and from ffmpeg's output: pure rules, no
process run (the runs are :class:`ooma_moh.media.FfmpegConverter`'s).

The container from the first bytes (:func:`sniff_container`), the audio stream's description
checked against the settings (:class:`InputWatch`), the loudness plan (:func:`plan_loudness`),
the durations and rendition sizes ffmpeg's log and files must agree with. Each refusal is a
:class:`~ooma_moh.rejections.Rejection`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ffmpeg
from .config import Settings
from .errors import MediaToolError, UploadRejected
from .model import FORMATS_BY_EXTENSION
from .rejections import Rejection

PCM_RATE = 16000
PCM_BYTES_PER_SAMPLE = 4  # f32le mono

#: container -> (ffmpeg demuxer, format whitelist entry, decoders it may use)
CONTAINERS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "wav", "pcm_s16le,pcm_s24le,pcm_s32le,pcm_f32le,pcm_f64le,pcm_u8,pcm_mulaw,pcm_alaw"),
    "mp3": ("mp3", "mp3", "mp3float,mp3"),
    "ogg": ("ogg", "ogg", "vorbis,libvorbis,opus,libopus"),
    # Matroska and WebM (what browsers' MediaRecorder writes): one demuxer, named "matroska,webm"
    "webm": ("matroska", "matroska,webm", "opus,libopus,vorbis,libvorbis"),
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
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM or Matroska
        return "webm"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "m4a"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x03
        return "aac" if layer == 0 else "mp3"
    raise UploadRejected(
        Rejection.UNRECOGNISED_FORMAT,
        "not a supported audio file: upload WAV, MP3, OGG or WebM (Vorbis/Opus), FLAC or M4A/AAC",
    )


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
    #: subtracted before the gain (the measured mean; 0 once a limited PCM has none left)
    dc_offset: float = 0.0

    def filters(self) -> str:
        """The ffmpeg filter chain for this plan (``aeval``: float, no clamping, unlike ``dcshift``)."""
        chain = f"aeval=val(0)-({self.dc_offset:.4f}):c=same," if self.dc_offset else ""
        chain += f"volume={self.gain_db:.2f}dB:precision=double"
        if self.limit_linear is not None:
            chain += f",alimiter=limit={self.limit_linear:.5f}:level=0:latency=1:attack=5:release=50"
        return chain


def plan_loudness(
    lufs: float, true_peak: float, target_lufs: float, ceiling_dbtp: float, dc_offset: float = 0.0
) -> LoudnessPlan:
    """Gain to ``target_lufs``; a limiter under the ceiling if the peak would exceed it; the DC
    offset (rounded to 4 decimals, as reported) subtracted first.

    The limiter works on samples and G.722 overshoots, hence the margin (see LIMITER_MARGIN_DB).
    The peak was measured with the offset in: at worst a limiting round more, which removes it.
    """
    gain = round(target_lufs - lufs, 2)
    dc = round(dc_offset, 4) + 0.0  # + 0.0: no "-0.0000"
    if true_peak + gain <= ceiling_dbtp:
        return LoudnessPlan(gain, None, dc)
    return LoudnessPlan(gain, round(10 ** ((ceiling_dbtp - LIMITER_MARGIN_DB) / 20), 5), dc)


@dataclass(frozen=True)
class Conversion:
    """The outcome of a successful conversion; ``files`` maps extension -> path."""

    container: str
    duration_ms: int
    files: dict[str, Path]
    #: what the analysis found (JSON-ready; keys in docs/configuration.md, "Analysis warnings"); empty from a
    #: converter that does not analyse
    analysis: dict[str, Any] = field(default_factory=dict)


#: ffmpeg's names of channel layouts (5.1's av_channel_layout_describe) -> channel count.
LAYOUT_CHANNELS = {
    "mono": 1,
    "stereo": 2,
    "downmix": 2,
    "2.1": 3,
    "3.0": 3,
    "3.0(back)": 3,
    "4.0": 4,
    "quad": 4,
    "quad(side)": 4,
    "3.1": 4,
    "5.0": 5,
    "5.0(side)": 5,
    "4.1": 5,
    "5.1": 6,
    "5.1(side)": 6,
    "6.0": 6,
    "6.0(front)": 6,
    "hexagonal": 6,
    "6.1": 7,
    "6.1(back)": 7,
    "6.1(front)": 7,
    "7.0": 7,
    "7.0(front)": 7,
    "7.1": 8,
    "7.1(wide)": 8,
    "7.1(wide-side)": 8,
    "octagonal": 8,
    "hexadecagonal": 16,
    "22.2": 24,
}
_STREAM_RE = re.compile(r"Stream #0:(\d+)\S*: (Audio|Video|Subtitle|Data|Attachment): (\w+)(.*)$")
_AUDIO_RE = re.compile(r", (\d+) Hz, ([^,]+)")
_WHITELIST_RE = re.compile(r"Codec \((\w+)\) not on whitelist")


def channel_count(layout: str) -> int | None:
    """Channels of an ffmpeg layout description (``stereo``, ``5.1(side)``, ``3 channels``)."""
    layout = layout.strip()
    if layout in LAYOUT_CHANNELS:
        return LAYOUT_CHANNELS[layout]
    match = re.match(r"(\d+) channels", layout)
    return int(match.group(1)) if match else None


class InputWatch:
    """Reads ffmpeg's description of the input as it is logged and stops the run before any
    decoding when the first audio stream breaks a rule (sample rate, channel count).

    It also remembers the codecs of the input's other streams (cover art, video): ffmpeg refuses
    to open their decoders because of the codec whitelist, which is the point — they are never
    decoded — so those refusals are not errors of the upload.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.section = ""
        self.audio_seen = False
        self.other_codecs: set[str] = set()
        self.channels = 0  # of the first audio stream, once seen
        self.audio_codec = ""  # of the first audio stream, once seen
        self.rejection: UploadRejected | None = None

    def __call__(self, line: str) -> str | None:
        """``ffmpeg.run``'s ``watch``: a reason to stop, or None."""
        if "Input #0," in line:
            self.section = "input"
        elif "Output #0," in line or "Stream mapping:" in line:
            self.section = "output"
        if self.section != "input" or (match := _STREAM_RE.search(line)) is None:
            return None
        _, kind, codec, rest = match.groups()
        if kind != "Audio" or self.audio_seen:
            self.other_codecs.add(codec)
            return None
        self.audio_seen = True
        self.audio_codec = codec
        self.rejection = self.check_audio(rest)
        return self.rejection.reason if self.rejection else None

    def check_audio(self, description: str) -> UploadRejected | None:
        """The rule the first audio stream breaks, if any (``, 44100 Hz, stereo, fltp, …``)."""
        s = self.settings
        match = _AUDIO_RE.search(description)
        if match is None:
            return UploadRejected(Rejection.UNDECODABLE, "the file's audio stream declares no sample rate")
        rate, channels = int(match.group(1)), channel_count(match.group(2))
        self.channels = channels or 0
        if rate < s.min_sample_rate:
            return UploadRejected(
                Rejection.SAMPLE_RATE,
                f"the audio's sample rate is {rate:,} Hz; at least {s.min_sample_rate:,} Hz is needed",
            )
        if rate > s.max_sample_rate:
            return UploadRejected(
                Rejection.SAMPLE_RATE,
                f"the audio's sample rate is {rate:,} Hz; at most {s.max_sample_rate:,} Hz is accepted",
            )
        if channels == 0:
            return UploadRejected(Rejection.UNDECODABLE, "the file's audio stream declares no channels")
        if channels is None or channels > s.max_channels:
            return UploadRejected(
                Rejection.CHANNELS,
                f"the audio has too many channels ({match.group(2).strip()}); at most {s.max_channels} are accepted",
            )
        return None

    def upload_errors(self, errors: list[str]) -> list[str]:
        """``errors`` minus the whitelist refusals of streams that are never decoded."""
        return [line for line in errors if not ((m := _WHITELIST_RE.search(line)) and m.group(1) in self.other_codecs)]

    def codec_refused(self, errors: list[str], container: str) -> UploadRejected | None:
        """The refusal when the codec whitelist refused the audio's own decoder (``errors``: the
        upload's, from :meth:`upload_errors`): an audio codec that container may not hold."""
        if not any(_WHITELIST_RE.search(line) for line in errors):
            return None
        return UploadRejected(
            Rejection.UNDECODABLE,
            f"the audio of this {container} file is {self.audio_codec}, which is not accepted in a {container} file",
        )


def public_detail(line: str) -> str:
    """An ffmpeg error line as a short reason fit for the uploader: no internal path, address,
    filter graph or option; generic when nothing of it is safe to show."""
    text = re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
    if ": " in text and "/" in text.split(": ", 1)[0]:
        text = text.split(": ", 1)[1]  # "/tmp/…/original: Invalid data…" -> "Invalid data…"
    if text.lower() in ("invalid argument", "operation not permitted", "unknown error"):
        text = ""  # an errno text says nothing about the file
    if not text or re.search(r"[/\\@\[\]=;]|0x[0-9a-f]|filter|option", text, re.I) or len(text) > 100:
        return "the audio data is damaged or uses an unsupported encoding"
    return text[0].lower() + text[1:]


def expected_samples(extension: str, samples_16k: int) -> int:
    """Samples a rendition holds when made from ``samples_16k`` samples at 16 kHz."""
    return samples_16k * FORMATS_BY_EXTENSION[extension].sample_rate // PCM_RATE


def check_rendition_size(extension: str, size: int, samples_16k: int) -> str | None:
    """Why a rendition of ``size`` bytes is not a complete rendition of ``samples_16k`` input
    samples, or None. The formats are headerless, so every byte string decodes and its length
    *is* its duration: a file cut short (disk full) is found here and nowhere else. The slack
    covers the resampler's edge (a few samples), far less than one lost write buffer."""
    fmt = FORMATS_BY_EXTENSION[extension]
    expected = fmt.expected_bytes(expected_samples(extension, samples_16k))
    slack = fmt.expected_bytes(64)
    if abs(size - expected) > slack:
        return f".{extension} holds {size:,} bytes where {expected:,} were expected"
    return None


def refuse_if_too_costly(run: ffmpeg.Run) -> None:
    """A run ended by a CPU, memory or time limit: the input costs more than one upload may."""
    if run.killed_by_limit:
        raise UploadRejected(
            Rejection.TOO_COSTLY, "the file needs more time or memory to convert than the server allows for one upload"
        )
