"""Real ffmpeg: a voice (a 1,000 Hz tone in bursts) mixed over a bed of two files (300 Hz, then
330 Hz, shorter than the voice so they loop), measured window by window in each tone's band: the
bed in the pauses and under the speech, the intro and the outro, the length, the determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ooma_moh import mix
from ooma_moh.config import Settings
from ooma_moh.errors import BedUnavailable, MediaToolError
from ooma_moh.media_rules import PCM_RATE
from tests.audio import ffmpeg

RATE = PCM_RATE
VOICE_S = 14.0
#: the voice speaks 2 s, pauses 1.5 s: bursts start at 0, 3.5, 7 and 10.5 s of the voice
BURSTS = [(start, start + 2.0) for start in (0.0, 3.5, 7.0, 10.5)]
BED_FILES = ((300, 5.0), (330, 3.0))  # one pass: 8 s, under the voice's 14 s
INTRO_S, OUTRO_S = mix.INTRO_MS / 1000, mix.OUTRO_MS / 1000
TOTAL_S = INTRO_S + VOICE_S + OUTRO_S
VOICE_BAND, BED_BAND = (900.0, 1100.0), (250.0, 400.0)


def write_pcm(path: Path, source: str) -> Path:
    """``source`` (a lavfi graph) as 16 kHz mono f32le at ``path``."""
    ffmpeg("-f", "lavfi", "-i", source, "-ac", "1", "-ar", str(RATE), "-f", "f32le", str(path))
    return path


def read_pcm(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<f4").astype(np.float64)


def band_db(samples: np.ndarray, band: tuple[float, float]) -> float:
    """Mean-square level (dB) of the part of ``samples`` in ``band`` (Hann window, rfft)."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    inside = (freqs >= band[0]) & (freqs <= band[1])
    power = 2 * float(np.sum(spectrum[inside])) / (len(samples) * float(np.sum(window**2)))
    return 10 * float(np.log10(power + 1e-30))


def cut(samples: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    return samples[round(start_s * RATE) : round(end_s * RATE)]


def bed_frequency(samples: np.ndarray) -> float:
    """The strongest frequency of ``samples`` inside the bed's band."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    spectrum[(freqs < BED_BAND[0]) | (freqs > BED_BAND[1])] = 0.0
    return float(freqs[int(np.argmax(spectrum))])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    work = tmp_path_factory.mktemp("mix-inputs")
    voice = write_pcm(
        work / "voice.f32",
        f"aevalsrc=0.25*sin(2*PI*1000*t)*lt(mod(t\\,3.5)\\,2):s={RATE}:d={VOICE_S}",
    )
    beds = [
        write_pcm(work / f"{i}-bed.f32", f"sine=f={freq}:sample_rate={RATE}:d={seconds},volume=0.5")
        for i, (freq, seconds) in enumerate(BED_FILES)
    ]
    return voice, beds


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("mix-home"))


def run_mix(settings: Settings, inputs: tuple[Path, list[Path]], out: Path, level: float) -> mix.MixResult:
    voice, beds = inputs
    return mix.mix_voice_over_bed(settings, voice, beds, out, bed_level_db=level)


@pytest.mark.parametrize("level", [-18.0, -24.0])
def test_bed_level_in_pauses_and_ducked_under_speech(
    settings: Settings, inputs: tuple[Path, list[Path]], tmp_path: Path, level: float
) -> None:
    result = run_mix(settings, inputs, tmp_path / "mix.f32", level)
    out = read_pcm(tmp_path / "mix.f32")
    assert result.bed_gain_db == mix.bed_gain_db(result.voice_lufs, result.bed_lufs, level)
    assert result.voice_lufs == pytest.approx(-15.05, abs=1.0)  # a 0.25 sine: -15.05 dBFS RMS
    voice_levels, speech_ratios, pause_levels = [], [], []
    for start, end in BURSTS:
        speaking = cut(out, INTRO_S + start + 0.1, INTRO_S + end - 0.1)  # after the attack
        voice_levels.append(band_db(speaking, VOICE_BAND))
        speech_ratios.append(band_db(speaking, VOICE_BAND) - band_db(speaking, BED_BAND))
        pause = cut(out, INTRO_S + end + 0.6, INTRO_S + end + 1.45)  # after the release
        pause_levels.append(band_db(pause, BED_BAND))
        assert band_db(pause, VOICE_BAND) < voice_levels[-1] - 60
    voice_level = float(np.mean(voice_levels))
    for ratio in speech_ratios:
        assert ratio == pytest.approx(-level + mix.DUCK_DB, abs=2.0)
    for bed in pause_levels:
        assert bed - voice_level == pytest.approx(level, abs=2.0)
    # the ducking is exact: the same bed 12 dB lower, not roughly
    ducked = [voice_level - r for r in speech_ratios]
    assert float(np.mean(pause_levels)) - float(np.mean(ducked)) == pytest.approx(mix.DUCK_DB, abs=0.1)


@pytest.fixture(scope="module")
def mixed(settings: Settings, inputs: tuple[Path, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mix-out") / "mix.f32"
    run_mix(settings, inputs, out, -18.0)
    return out


def test_length_is_intro_voice_outro(settings: Settings, inputs: tuple[Path, list[Path]], tmp_path: Path) -> None:
    result = run_mix(settings, inputs, tmp_path / "mix.f32", -18.0)
    assert (tmp_path / "mix.f32").stat().st_size == round(TOTAL_S * RATE) * 4
    assert result.duration_ms == round(TOTAL_S * 1000)
    assert (result.intro_ms, result.outro_ms, result.duck_db) == (mix.INTRO_MS, mix.OUTRO_MS, mix.DUCK_DB)


def test_intro_is_the_bed_alone_faded_in_before_the_first_voice_frame(mixed: Path) -> None:
    out = read_pcm(mixed)
    pause_level = band_db(cut(out, INTRO_S + 2.6, INTRO_S + 3.45), BED_BAND)
    frames = [cut(out, t / 100, t / 100 + 0.02) for t in range(0, 300, 2)]  # 20 ms frames, first 3 s
    speaking = [band_db(f, VOICE_BAND) > pause_level for f in frames]
    assert speaking.index(True) * 0.02 == pytest.approx(INTRO_S)  # the first voice frame: at 2.00 s
    assert not any(speaking[: int(INTRO_S / 0.02)])
    # faded in from silence, then at its pause level (not ducked) for the rest of the intro
    assert np.max(np.abs(out[:16])) < 1e-3
    assert band_db(cut(out, 0.0, 0.2), BED_BAND) < pause_level - 10
    assert band_db(cut(out, mix.FADE_IN_MS / 1000 + 0.05, INTRO_S - 0.02), BED_BAND) == pytest.approx(
        pause_level, abs=0.5
    )


def test_outro_is_the_bed_alone_fading_out_after_the_last_voice_frame(mixed: Path) -> None:
    out = read_pcm(mixed)
    pause_level = band_db(cut(out, INTRO_S + 2.6, INTRO_S + 3.45), BED_BAND)
    last_word_end = INTRO_S + BURSTS[-1][1]
    frames = [cut(out, t / 100, t / 100 + 0.02) for t in range(int(last_word_end * 100) - 20, int(TOTAL_S * 100), 2)]
    speaking = [band_db(f, VOICE_BAND) > pause_level for f in frames]
    assert speaking.count(True) == 10 and speaking[:10] == [True] * 10  # nothing after the last word
    voice_end = INTRO_S + VOICE_S
    fade_start = TOTAL_S - mix.FADE_OUT_MS / 1000
    assert band_db(cut(out, voice_end, fade_start), BED_BAND) == pytest.approx(pause_level, abs=0.5)
    assert band_db(cut(out, TOTAL_S - 0.3, TOTAL_S), BED_BAND) < pause_level - 15
    assert np.max(np.abs(out[-16:])) < 1e-3


def test_bed_files_play_in_order_and_loop(mixed: Path) -> None:
    out = read_pcm(mixed)
    cycle = sum(seconds for _, seconds in BED_FILES)
    for tenth in range(0, int(TOTAL_S * 10) - 5, 5):  # 0.5 s windows
        start = tenth / 10
        position = start % cycle
        expected = 300 if position < 5.0 else 330
        if position < 5.0 < position + 0.5 or position + 0.5 > cycle:
            continue  # a window across a file boundary
        assert bed_frequency(cut(out, start, start + 0.5)) == pytest.approx(expected, abs=3), start


def test_same_inputs_same_bytes(
    settings: Settings, inputs: tuple[Path, list[Path]], tmp_path: Path, mixed: Path
) -> None:
    again = tmp_path / "again.f32"
    run_mix(settings, inputs, again, -18.0)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(mixed.read_bytes()).digest()


def test_one_long_bed_is_played_once_from_its_start(
    settings: Settings, inputs: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    voice, _ = inputs
    long_bed = write_pcm(tmp_path / "long.f32", f"sine=f=330:sample_rate={RATE}:d=60,volume=0.1")
    result = mix.mix_voice_over_bed(settings, voice, [long_bed], tmp_path / "mix.f32")
    out = read_pcm(tmp_path / "mix.f32")
    assert len(out) == round(TOTAL_S * RATE)
    assert bed_frequency(cut(out, 1.0, 2.0)) == pytest.approx(330, abs=3)
    # lavfi's sine is 1/8 of full scale: x 0.1 -> 0.0125, RMS 3 dB under, K-weighting -0.7 dB at 330 Hz
    assert result.bed_lufs == pytest.approx(20 * np.log10(0.0125) - 3.0 - 0.7, abs=0.5)


def test_empty_bed_files_are_skipped_and_a_silent_bed_refused(
    settings: Settings, inputs: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    voice, beds = inputs
    empty = tmp_path / "0-empty.f32"
    empty.write_bytes(b"")
    result = mix.mix_voice_over_bed(settings, voice, [empty, *beds], tmp_path / "mix.f32")
    assert result.duration_ms == round(TOTAL_S * 1000)
    silent = write_pcm(tmp_path / "silent.f32", f"anullsrc=r={RATE}:cl=mono:d=5")
    with pytest.raises(BedUnavailable, match="silent"):
        mix.mix_voice_over_bed(settings, voice, [silent], tmp_path / "mix.f32")
    with pytest.raises(BedUnavailable):
        mix.mix_voice_over_bed(settings, voice, [empty], tmp_path / "mix.f32")


def test_failures_are_media_tool_errors(settings: Settings, inputs: tuple[Path, list[Path]], tmp_path: Path) -> None:
    voice, beds = inputs
    with pytest.raises(MediaToolError, match="not found"):
        mix.mix_voice_over_bed(Settings(home=tmp_path, ffmpeg="/nonexistent/ffmpeg"), voice, beds, tmp_path / "m.f32")
    with pytest.raises(MediaToolError, match="missing.f32"):
        mix.mix_voice_over_bed(settings, tmp_path / "missing.f32", beds, tmp_path / "m.f32")
    silent = write_pcm(tmp_path / "silent.f32", f"anullsrc=r={RATE}:cl=mono:d=3")
    with pytest.raises(MediaToolError, match="no measurable loudness"):
        mix.mix_voice_over_bed(settings, silent, beds, tmp_path / "m.f32")
    with pytest.raises(MediaToolError, match="mixing"):  # ffmpeg's own error: the output cannot be written
        mix.mix_voice_over_bed(settings, voice, beds, tmp_path / "no-such-dir" / "m.f32")
