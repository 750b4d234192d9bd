"""Mixing benchmark: ``mix.mix_voice_over_bed`` against the leanest raw ffmpeg doing the same mix.

Inputs (generated, 16 kHz mono f32le): a 60 s "voice" (band-limited pink noise, 3 s spoken and
1.5 s of pause, over and over) and a 3 min bed (pink noise plus a melody).
- ours: ``mix_voice_over_bed`` (file sizes, one ffmpeg run measuring both loudnesses, one mixing
  run; each under ``prlimit``/``setpriv`` with its log read as it is written, then checked);
- baseline: the same two ffmpeg runs by hand with ``subprocess.run`` (the same measuring graph,
  the gain computed from its summaries, the same mixing graph): the fewest runs possible, since a
  gain must be measured before it is applied. Its output must be byte-identical to ours, which
  proves it does the same mix; the time of each of its two runs is printed too.
Prints the median of ``--runs`` runs of each (interleaved) and the ratio ours / baseline.

    .venv/bin/python bench/mix.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ooma_moh import mix
from ooma_moh.config import Settings
from ooma_moh.media_rules import PCM_RATE

FF = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-y"]
VOICE_S, BED_S = 60, 180


def make_inputs(voice: Path, bed: Path) -> None:
    speech = (
        f"anoisesrc=color=pink:amplitude=0.3:seed=11:r={PCM_RATE}:d={VOICE_S},highpass=f=200,lowpass=f=3400,"
        "volume=volume=0:enable='gte(mod(t\\,4.5)\\,3)'"
    )
    melody = "+".join(f"0.15*sin(2*PI*{f}*t)*lt(mod(t\\,{i + 2})\\,1)" for i, f in enumerate((262, 330, 392, 523)))
    pcm = ["-ac", "1", "-ar", str(PCM_RATE), "-f", "f32le"]
    subprocess.run([*FF, "-v", "error", "-f", "lavfi", "-i", speech, *pcm, str(voice)], check=True)
    subprocess.run(
        [
            *FF,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"anoisesrc=color=pink:amplitude=0.05:seed=3:r={PCM_RATE}:d={BED_S}",
            "-f",
            "lavfi",
            "-i",
            f"aevalsrc='{melody}':s={PCM_RATE}:d={BED_S}",
            "-filter_complex",
            "amix=inputs=2:normalize=0",
            *pcm,
            str(bed),
        ],
        check=True,
    )


def baseline(voice: Path, bed: Path, out: Path, level: float = -18.0) -> tuple[float, float]:
    """The same mix by hand; returns the seconds of its two runs."""
    plan = mix.plan_mix(voice.stat().st_size // 4, [bed.stat().st_size // 4])
    inputs = ["-f", "f32le", "-ar", str(PCM_RATE), "-ac", "1", "-i", str(voice)]
    inputs += ["-f", "f32le", "-ar", str(PCM_RATE), "-ac", "1", "-i", str(bed)]
    start = time.perf_counter()
    meters = ["-map", "[voice]", "-map", "[bed]", "-f", "null", "-"]
    log = subprocess.run(
        [*FF, *inputs, "-filter_complex", mix.measure_graph(plan), *meters],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    voice_lufs, bed_lufs = mix.parse_loudness(log)
    graph = mix.mix_graph(plan, mix.bed_gain_db(voice_lufs, bed_lufs, level), mix.gate_threshold(voice_lufs))
    measured = time.perf_counter()
    subprocess.run(
        [*FF, "-v", "error", *inputs, "-filter_complex", graph, "-map", "[mix]", "-c:a", "pcm_f32le"]
        + ["-f", "f32le", str(out)],
        check=True,
    )
    return measured - start, time.perf_counter() - measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        voice, bed = work / "voice.f32", work / "bed.f32"
        make_inputs(voice, bed)
        settings = Settings(home=work / "home")
        ours: list[float] = []
        base: list[float] = []
        parts: list[tuple[float, float]] = []
        result = None
        for _ in range(args.runs):  # interleaved, so drift in machine load hits both alike
            start = time.perf_counter()
            result = mix.mix_voice_over_bed(settings, voice, [bed], work / "ours.f32")
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            parts.append(baseline(voice, bed, work / "base.f32"))
            base.append(time.perf_counter() - start)
        assert (work / "ours.f32").read_bytes() == (work / "base.f32").read_bytes(), "not the same mix"
        print(f"input: {VOICE_S} s voice over a {BED_S} s bed -> {result}")
        o, b = statistics.median(ours), statistics.median(base)
        m, x = statistics.median(p[0] for p in parts), statistics.median(p[1] for p in parts)
        print(f"ours     (mix_voice_over_bed)  median {o:6.3f} s  runs {[round(t, 3) for t in ours]}")
        print(f"baseline (two raw ffmpeg runs) median {b:6.3f} s  runs {[round(t, 3) for t in base]}")
        print(f"  of which measuring {m:.3f} s, mixing {x:.3f} s (medians)")
        print(f"ratio ours/baseline: {o / b:.2f} (goal <= 1.2); outputs byte-identical")


if __name__ == "__main__":
    main()
