"""Ingest benchmark: our upload path against the leanest raw ffmpeg doing the same work.

Input: a ~4.8 MB, 300 s, 128 kbit/s stereo MP3 (generated: pink noise plus a melody).
- ours: ``MohService.upload`` (stage, sniff, restricted decode + ebur128, encode five renditions,
  store blobs, commit the catalog);
- baseline: the same two-pass loudness processing done by hand with the fewest ffmpeg runs
  possible: one ``ebur128`` pass on the MP3, then one command writing the five renditions with the
  measured gain (a single command cannot measure and then apply a gain). For context, the one
  command that does both, one-pass ``loudnorm``, is timed too with ``--loudnorm``.
Prints the median of ``--runs`` runs of each and the ratio ours / baseline.

    .venv/bin/python bench/ingest.py [--runs 3] [--loudnorm]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ooma_moh.app import build_service
from ooma_moh.config import Settings
from ooma_moh.media import parse_ebur128

FF = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-y"]


def make_input(path: Path) -> None:
    melody = "+".join(f"0.15*sin(2*PI*{f}*t)*lt(mod(t\\,{i + 2})\\,1)" for i, f in enumerate((262, 330, 392, 523)))
    subprocess.run(FF + ["-v", "error", "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.1:seed=3:d=300",
                         "-f", "lavfi", "-i", f"aevalsrc='{melody}':s=44100:d=300",
                         "-filter_complex", "amix=inputs=2:normalize=0", "-ac", "2", "-c:a", "libmp3lame",
                         "-b:a", "128k", str(path)], check=True)


def baseline(source: Path, out: Path) -> None:
    log = subprocess.run(FF + ["-i", str(source), "-af", "aresample=16000,aformat=channel_layouts=mono,ebur128=peak=true",
                               "-f", "null", "-"], check=True, capture_output=True, text=True).stderr
    lufs, _ = parse_ebur128(log)
    graph = (f"[0:a]aresample=16000,aformat=channel_layouts=mono,volume={-20 - lufs:.2f}dB,asplit=2[hi][lo];"
             "[hi]asplit=2[a][b];[lo]aresample=8000,asplit=3[c][d][e]")
    subprocess.run(FF + ["-v", "error", "-i", str(source), "-filter_complex", graph,
                         "-map", "[a]", "-c:a", "pcm_s16le", "-f", "s16le", str(out / "b.sln16"),
                         "-map", "[b]", "-c:a", "adpcm_g722", "-f", "g722", str(out / "b.g722"),
                         "-map", "[c]", "-c:a", "pcm_s16le", "-f", "s16le", str(out / "b.sln"),
                         "-map", "[d]", "-c:a", "pcm_mulaw", "-f", "mulaw", str(out / "b.ulaw"),
                         "-map", "[e]", "-c:a", "pcm_alaw", "-f", "alaw", str(out / "b.alaw")], check=True)


def loudnorm_single(source: Path, out: Path) -> None:
    subprocess.run(FF + ["-v", "error", "-i", str(source), "-af", "loudnorm=I=-20:TP=-2,aresample=16000",
                         "-ac", "1", "-c:a", "pcm_s16le", "-f", "s16le", str(out / "l.sln16")], check=True)


def timed(func, *args) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loudnorm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        source = tmpdir / "upload.mp3"
        make_input(source)
        print(f"input: {source.stat().st_size:,} bytes MP3, 300 s")
        service = build_service(Settings(home=tmpdir / "home"))
        ours, base = [], []
        for run in range(args.runs):
            base.append(timed(baseline, source, tmpdir))
            ours.append(timed(lambda tenant=f"t{run}": service.upload(tenant, source, accept_disclaimer=True, accepted_by="bench")))
        o, b = statistics.median(ours), statistics.median(base)
        print(f"ours     (upload)              median {o:6.2f} s  runs {[round(x, 2) for x in ours]}")
        print(f"baseline (ebur128 + encode)    median {b:6.2f} s  runs {[round(x, 2) for x in base]}")
        print(f"ratio ours/baseline: {o / b:.2f}")
        if args.loudnorm:
            ln = timed(loudnorm_single, source, tmpdir)
            print(f"one-command loudnorm (1 rendition only): {ln:6.2f} s, ratio ours/loudnorm {o / ln:.2f}")


if __name__ == "__main__":
    main()
