"""Ingest benchmark: our upload path against the leanest raw ffmpeg doing the same work.

Input: a ~4.8 MB, 300 s, 128 kbit/s stereo MP3 (generated: pink noise plus a melody).
- ours: ``MohService.upload`` (stage, sniff, restricted decode + ebur128, encode five renditions,
  store blobs, commit the catalog);
- baseline: the same two-pass loudness processing done by hand with the fewest ffmpeg runs
  possible: one ``ebur128`` pass on the MP3, then one command writing the five renditions with the
  measured gain (a single command cannot measure and then apply a gain). For context, the one
  command that does both, one-pass ``loudnorm``, is timed too with ``--loudnorm``.
- ours without the rendition verification (``FfmpegConverter(verify=False)``), to show what the
  checks added for issue 8 cost, in the same run;
- ours without the analysis branches (``FfmpegConverter(analyse=False)``: no volumedetect, astats,
  band filters; silencedetect stays, trimming needs it), and ours without the analysis *and*
  without the loop processing (``trim_silence=False``, ``loop_crossfade_ms=0``: the encode run of
  before issue 21), to show what each added in the same run;
- a draft (``MohService.make_draft``: the upload's conversion and analysis without the commit:
  what the page waits for before it shows the analysis), against ours without the analysis and
  the loop (the upload of before issue 21);
- the worst accepted input: the longest accepted duration (30 min) at the lowest accepted sample
  rate (8 kHz), an 8 kbit/s mono MP3 of 1.8 MB, uploaded in a child process whose children's CPU
  seconds and peak RSS (ffmpeg's) are reported; and the 3,444-byte 1 Hz WAV of issue 8, which
  used to cost 82 s of CPU and 901 MB and is now refused before decoding.
Prints the median of ``--runs`` runs of each and the ratios ours / baseline.

    .venv/bin/python bench/ingest.py [--runs 3] [--loudnorm] [--no-worst-case]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ooma_moh.app import build_service
from ooma_moh.config import Settings
from ooma_moh.errors import UploadRejected
from ooma_moh.media import FfmpegConverter
from ooma_moh.media_rules import parse_ebur128
from ooma_moh.service import MohService

FF = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-y"]


def make_input(path: Path) -> None:
    melody = "+".join(f"0.15*sin(2*PI*{f}*t)*lt(mod(t\\,{i + 2})\\,1)" for i, f in enumerate((262, 330, 392, 523)))
    subprocess.run(
        FF
        + [
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=color=pink:amplitude=0.1:seed=3:d=300",
            "-f",
            "lavfi",
            "-i",
            f"aevalsrc='{melody}':s=44100:d=300",
            "-filter_complex",
            "amix=inputs=2:normalize=0",
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            str(path),
        ],
        check=True,
    )


def baseline(source: Path, out: Path) -> None:
    log = subprocess.run(
        FF
        + [
            "-i",
            str(source),
            "-af",
            "aresample=16000,aformat=channel_layouts=mono,ebur128=peak=true",
            "-f",
            "null",
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    lufs, _ = parse_ebur128(log)
    graph = (
        f"[0:a]aresample=16000,aformat=channel_layouts=mono,volume={-20 - lufs:.2f}dB,asplit=2[hi][lo];"
        "[hi]asplit=2[a][b];[lo]aresample=8000,asplit=3[c][d][e]"
    )
    subprocess.run(
        FF
        + [
            "-v",
            "error",
            "-i",
            str(source),
            "-filter_complex",
            graph,
            "-map",
            "[a]",
            "-c:a",
            "pcm_s16le",
            "-f",
            "s16le",
            str(out / "b.sln16"),
            "-map",
            "[b]",
            "-c:a",
            "adpcm_g722",
            "-f",
            "g722",
            str(out / "b.g722"),
            "-map",
            "[c]",
            "-c:a",
            "pcm_s16le",
            "-f",
            "s16le",
            str(out / "b.sln"),
            "-map",
            "[d]",
            "-c:a",
            "pcm_mulaw",
            "-f",
            "mulaw",
            str(out / "b.ulaw"),
            "-map",
            "[e]",
            "-c:a",
            "pcm_alaw",
            "-f",
            "alaw",
            str(out / "b.alaw"),
        ],
        check=True,
    )


def loudnorm_single(source: Path, out: Path) -> None:
    subprocess.run(
        FF
        + [
            "-v",
            "error",
            "-i",
            str(source),
            "-af",
            "loudnorm=I=-20:TP=-2,aresample=16000",
            "-ac",
            "1",
            "-c:a",
            "pcm_s16le",
            "-f",
            "s16le",
            str(out / "l.sln16"),
        ],
        check=True,
    )


def make_worst_case(path: Path) -> None:
    """30 minutes (the longest accepted) of 8 kHz (the lowest accepted rate) music-like noise."""
    subprocess.run(
        FF
        + [
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=color=pink:amplitude=0.2:seed=5:d=1800:r=8000",
            "-ac",
            "1",
            "-ar",
            "8000",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "8k",
            str(path),
        ],
        check=True,
    )


def make_one_hz(path: Path) -> None:
    """Issue 8's 3,444-byte WAV that declares a 1 Hz sample rate (28 min 20 s of 'audio')."""
    data = bytes(128 + i % 7 for i in range(3400))
    fmt = struct.pack("<HHIIHH", 1, 1, 1, 1, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def child_cost(home: Path, source: Path) -> None:
    """(In a child process) upload ``source``; print JSON: outcome, wall s, CPU s and peak RSS of
    the ffmpeg children."""
    service = build_service(Settings(home=home))
    start = time.perf_counter()
    try:
        tenant = service.upload("worst", source, accept_disclaimer=True, accepted_by="bench")
        outcome = f"accepted, {tenant.upload.duration_ms / 1000:.0f} s"
    except UploadRejected as exc:
        outcome = f"rejected ({exc.reason})"
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "outcome": outcome,
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024,
            }
        )
    )


def cost(home: Path, source: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(home), str(source)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def timed(func, *args) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loudnorm", action="store_true")
    parser.add_argument("--no-worst-case", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_cost(Path(args.child[0]), Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        source = tmpdir / "upload.mp3"
        make_input(source)
        print(f"input: {source.stat().st_size:,} bytes MP3, 300 s")
        service = build_service(Settings(home=tmpdir / "home"))
        settings = service.settings
        unverified = MohService(settings, service.catalog, service.blobs, FfmpegConverter(settings, verify=False))
        unanalysed = MohService(settings, service.catalog, service.blobs, FfmpegConverter(settings, analyse=False))
        unlooped_settings = dataclasses.replace(settings, trim_silence=False, loop_crossfade_ms=0)
        unlooped = MohService(
            unlooped_settings, service.catalog, service.blobs, FfmpegConverter(unlooped_settings, analyse=False)
        )
        variants = {"ours": service, "unverified": unverified, "unanalysed": unanalysed, "unlooped": unlooped}
        times: dict[str, list[float]] = {name: [] for name in (*variants, "draft")}
        base: list[float] = []
        for run in range(args.runs):  # interleaved, so drift in machine load hits all of them alike
            base.append(timed(baseline, source, tmpdir))
            for name, svc in variants.items():
                tenant = f"{name}{run}"
                times[name].append(
                    timed(lambda s=svc, t=tenant: s.upload(t, source, accept_disclaimer=True, accepted_by="bench"))
                )
            times["draft"].append(timed(service.make_draft, f"draft{run}", source))
        m = {name: statistics.median(values) for name, values in times.items()}
        o, u, b = m["ours"], m["unverified"], statistics.median(base)
        for name, label in (
            ("ours", "ours     (upload)            "),
            ("unverified", "ours without verification    "),
            ("unanalysed", "ours without analysis        "),
            ("unlooped", "ours without analysis, loop  "),
            ("draft", "draft (make_draft)           "),
        ):
            print(f"{label}  median {m[name]:6.2f} s  runs {[round(x, 2) for x in times[name]]}")
        print(f"baseline (ebur128 + encode)    median {b:6.2f} s  runs {[round(x, 2) for x in base]}")
        print(f"ratio ours/baseline: {o / b:.2f}; without verification: {u / b:.2f}; verified/unverified: {o / u:.3f}")
        analysis, loop = m["ours"] - m["unanalysed"], m["unanalysed"] - m["unlooped"]
        both = m["unlooped"] / b
        print(f"analysis costs {analysis:+.2f} s, loop processing {loop:+.2f} s; ratio without both: {both:.2f}")
        print(f"draft / ours without analysis and loop: {m['draft'] / m['unlooped']:.2f} (goal <= 1.2)")
        if not args.no_worst_case:
            worst, one_hz = tmpdir / "worst.mp3", tmpdir / "onehz.wav"
            make_worst_case(worst)
            make_one_hz(one_hz)
            for label, path in (
                ("worst accepted (30 min, 8 kHz, 8 kbit/s MP3)", worst),
                ("1 Hz WAV, 3,444 bytes", one_hz),
            ):
                c = cost(tmpdir / f"home-{path.stem}", path)
                print(
                    f"{label}: {path.stat().st_size:,} bytes -> {c['outcome']}; wall {c['wall_s']:.2f} s,"
                    f" ffmpeg CPU {c['cpu_s']:.2f} s, ffmpeg peak RSS {c['peak_rss_mb']:.0f} MB"
                )
        if args.loudnorm:
            ln = timed(loudnorm_single, source, tmpdir)
            print(f"one-command loudnorm (1 rendition only): {ln:6.2f} s, ratio ours/loudnorm {o / ln:.2f}")


if __name__ == "__main__":
    main()
