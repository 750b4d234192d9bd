"""Sync benchmark on the lab Asterisk: 10,000 tenants, both publication modes.

For each mode (realtime, static):
1. full sync of N tenants with synthetic renditions (tiny distinct files): time, files written;
2. one tenant among N gets a real new file: time from `sync TENANT` start until a new hold can
   play it (sync, plus the reload in static mode), files written, reloads issued — and a recorded
   caller confirms the new tone;
3. the Asterisk-side cost: static — the reload of N classes (ARI PUT res_musiconhold.so);
   realtime — StartMusicOnHold time of a tenant class among N rows (row lookup + directory scan),
   against the static `default` class measured in the same run.
Ratios compare realtime with static, and each against its in-run baseline.

    sudo .venv/bin/python bench/sync.py [--tenants 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ooma_moh.app import build_service, build_syncer
from ooma_moh.ari.client import AriClient
from ooma_moh.config import Settings
from ooma_moh.lab import LabAsterisk
from ooma_moh.lab.tones import classify_windows
from ooma_moh.media import synth_sample
from ooma_moh.model import RENDITION_FORMATS, Disclaimer, Rendition, UploadedFile


def fill_catalog(settings: Settings, tenants: int) -> None:
    """N tenants on file, each with five tiny distinct renditions (no ffmpeg: 0.1 s of bytes)."""
    service = build_service(settings)
    service.catalog._db.execute("PRAGMA synchronous=OFF")  # bench set-up only
    now = datetime.now(UTC)
    for i in range(tenants):
        renditions = []
        for fmt in RENDITION_FORMATS:
            data = (f"{i}:{fmt.extension}:".encode() * 1000)[: fmt.expected_bytes(fmt.sample_rate // 10)]
            sha = hashlib.sha256(data).hexdigest()
            path = service.blobs.path(sha)
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            renditions.append(Rendition(fmt.extension, fmt.sample_rate, len(data), sha))
        original = hashlib.sha256(f"original {i}".encode()).hexdigest()
        service.catalog.save_upload(
            f"t{i:05d}",
            UploadedFile("x.wav", 1, original, 100, "wav", now),
            Disclaimer("bench", now, original),
            tuple(renditions),
        )
    service.catalog.close()


def tone_share(wav_path: Path, freq: float) -> float:
    with wave.open(str(wav_path)) as wav:
        windows = classify_windows(wav.readframes(wav.getnframes()), wav.getframerate(), (freq, 300.0))[1:]
    return sum(1 for w in windows if w == freq) / max(1, len(windows))


def reload_timer(settings: Settings, reloads: list[float]) -> Callable[[], None]:
    """The syncer's reload: ARI PUT res_musiconhold.so, each one's seconds appended to ``reloads``."""

    def reload() -> None:
        start = time.perf_counter()

        async def go() -> None:
            async with AriClient(settings.ari_url, settings.ari_user, settings.ari_password, timeout=600) as ari:
                await ari.reload_module("res_musiconhold.so")

        asyncio.run(go())
        reloads.append(time.perf_counter() - start)

    return reload


def change_live(
    lab: LabAsterisk, settings: Settings, changed: str, freq: float, work: Path, profile: Path | None = None
) -> dict[str, float]:
    """Step 2: ``changed`` gets a real new file (a ``freq`` Hz tone), then ``sync TENANT`` is timed
    until a new hold can play it (realtime: the sync; static: the sync and its reload), and a
    recorded caller on the class says which share of 100 ms windows carry the new tone.
    ``profile``: that sync's cProfile statistics are written there."""
    service = build_service(settings)
    reloads: list[float] = []
    syncer = build_syncer(settings, service, reload_timer(settings, reloads))
    sample = synth_sample(settings, work / f"{changed}-{int(freq)}.mp3", freq, 4.0)
    service.upload(changed, sample, accept_disclaimer=True, accepted_by="bench")
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    report = syncer.run([changed])
    if profiler:
        profiler.disable()
    out: dict[str, float] = {"change_live_s": time.perf_counter() - start}
    if profiler and profile:
        profiler.dump_stats(profile)
    out["change_files"] = report.files_written
    out["change_reloads"] = len(reloads)
    out["change_reload_s"] = sum(reloads)
    out["change_tone_share"] = tone_share(lab.record(f"bench_{changed}", 2, f"tenant-{changed}"), freq)
    service.catalog.close()
    return out


def moh_starts(lab: LabAsterisk, tenants: int, runs: int = 9) -> dict[str, float]:
    """Step 3: StartMusicOnHold of tenant classes spread over the N, alternating with the static
    ``default`` class (the floor), each timed inside Asterisk; medians of ``runs``."""
    starts, defaults = [], []
    for i in range(runs):
        starts.append(lab.moh_start_seconds(f"tenant-t{(i * 997) % tenants:05d}"))
        defaults.append(lab.moh_start_seconds("default"))
    return {"moh_start_s": statistics.median(starts), "default_start_s": statistics.median(defaults)}


def run_mode(lab: LabAsterisk, mode: str, tenants: int, work: Path) -> dict[str, float]:
    settings = Settings(**lab.settings_overrides(), publish_mode=mode)
    out: dict[str, float] = {}
    syncer_service = build_service(settings)
    reloads: list[float] = []
    syncer = build_syncer(settings, syncer_service, reload_timer(settings, reloads))
    start = time.perf_counter()
    report = syncer.run(None)
    out["full_sync_s"] = time.perf_counter() - start
    out["full_files"] = report.files_written
    out["full_reloads"] = len(reloads)
    out["full_reload_s"] = sum(reloads)
    syncer_service.catalog.close()
    freq = 880.0 if mode == "realtime" else 660.0
    out.update(change_live(lab, settings, f"t{tenants // 2:05d}", freq, work))
    out.update(moh_starts(lab, tenants))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="ooma-moh-bench-") as tmp:
        work = Path(tmp)
        for mode in ("realtime", "static"):
            with LabAsterisk(work / f"lab-{mode}") as lab:
                t0 = time.perf_counter()
                fill_catalog(Settings(home=lab.home), args.tenants)
                print(f"[{mode}] catalog of {args.tenants} tenants filled in {time.perf_counter() - t0:.1f} s")
                results[mode] = run_mode(lab, mode, args.tenants, work)
                for key, value in results[mode].items():
                    print(f"[{mode}] {key:<18} {value:10.3f}")
    rt, st = results["realtime"], results["static"]
    print(f"\nN = {args.tenants}")
    print(
        f"full sync            realtime {rt['full_sync_s']:7.2f} s   static {st['full_sync_s']:7.2f} s"
        f" (of which reload {st['full_reload_s']:.2f} s)"
    )
    print(
        f"1 changed -> live    realtime {rt['change_live_s']:7.3f} s   static {st['change_live_s']:7.3f} s"
        f"   ratio static/realtime {st['change_live_s'] / rt['change_live_s']:.0f}x"
    )
    print(
        f"  files written      realtime {rt['change_files']:.0f}   static {st['change_files']:.0f};"
        f" reloads realtime {rt['change_reloads']:.0f}, static {st['change_reloads']:.0f}"
    )
    print(f"  new tone heard     realtime {rt['change_tone_share']:.0%}   static {st['change_tone_share']:.0%}")
    print(
        f"StartMusicOnHold, median of 9: realtime tenant class {rt['moh_start_s'] * 1000:.2f} ms,"
        f" static default class {rt['default_start_s'] * 1000:.2f} ms"
        f" (ratio {rt['moh_start_s'] / rt['default_start_s']:.1f});"
        f" static tenant class {st['moh_start_s'] * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
