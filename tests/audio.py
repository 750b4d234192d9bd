"""Audio helpers for tests: generate inputs with ffmpeg, read renditions, find tones, meter loudness."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np

#: How ffmpeg writes each accepted container (codec arguments, format).
WRITERS = {
    "wav": (["-c:a", "pcm_s16le"], "wav"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "128k"], "mp3"),
    "ogg": (["-c:a", "libvorbis", "-q:a", "4"], "ogg"),
    "opus": (["-c:a", "libopus", "-b:a", "64k"], "ogg"),
    "flac": (["-c:a", "flac"], "flac"),
    "m4a": (["-c:a", "aac", "-b:a", "128k"], "ipod"),
}

RAW_FORMATS = {
    "sln": ("s16le", 8000),
    "sln16": ("s16le", 16000),
    "ulaw": ("mulaw", 8000),
    "alaw": ("alaw", 8000),
    "g722": ("g722", 16000),
}


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; fail the test if it fails."""
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_audio(
    path: Path,
    *,
    source: str,
    seconds: float,
    container: str,
    volume_db: float = 0.0,
    channels: int = 2,
    rate: int = 44100,
) -> Path:
    """Write ``seconds`` of a lavfi ``source`` (e.g. ``sine=f=440``) in ``container`` at ``path``."""
    codec, fmt = WRITERS[container]
    if container == "opus":
        rate = 48000
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"{source}:d={seconds}" if "sine" in source else source,
        "-t",
        str(seconds),
        "-af",
        f"volume={volume_db}dB",
        "-ac",
        str(channels),
        "-ar",
        str(rate),
        *codec,
        "-f",
        fmt,
        str(path),
    )
    return path


def tone(path: Path, freq: float, seconds: float = 3.0, container: str = "wav", volume_db: float = -6.0) -> Path:
    """A sine tone in a container."""
    return make_audio(
        path, source=f"sine=f={freq}:sample_rate=44100", seconds=seconds, container=container, volume_db=volume_db
    )


def decode_raw(path: Path, extension: str) -> tuple[np.ndarray, int]:
    """Samples (float, -1..1) and rate of a rendition file, decoded by ffmpeg (an independent reader)."""
    fmt, rate = RAW_FORMATS[extension]
    extra = ["-ar", str(rate), "-ac", "1"] if fmt in ("s16le", "mulaw", "alaw") else []
    out = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-f",
            fmt,
            *extra,
            "-i",
            str(path),
            "-f",
            "s16le",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(out, dtype="<i2").astype(np.float64) / 32768.0, rate


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The frequency (Hz) with the most energy in ``samples``."""
    window = samples * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(window))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(samples))


def dominant_per_window(samples: np.ndarray, rate: int, window_s: float = 0.1) -> list[float]:
    """Dominant frequency of each ``window_s`` window; 0.0 for a silent window."""
    step = int(rate * window_s)
    result = []
    for start in range(0, len(samples) - step + 1, step):
        chunk = samples[start : start + step]
        result.append(0.0 if np.max(np.abs(chunk)) < 0.003 else dominant_frequency(chunk, rate))
    return result


def loudness(path: Path, extension: str) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) of a rendition, by ffmpeg's ebur128 meter."""
    fmt, rate = RAW_FORMATS[extension]
    extra = ["-ar", str(rate), "-ac", "1"] if fmt in ("s16le", "mulaw", "alaw") else []
    log = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-f",
            fmt,
            *extra,
            "-i",
            str(path),
            "-af",
            "ebur128=peak=true",
            "-f",
            "null",
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    summary = log[log.rindex("Summary:") :]
    integrated = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    true_peak = re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary)
    assert integrated is not None and true_peak is not None, summary
    lufs = float(integrated.group(1))
    peak = float(true_peak.group(1))
    return lufs, peak
