"""Hold benchmark on the lab Asterisk: N concurrent bridged calls, each held and unheld.

Each call is the lab's ARI setup (a recorded caller and a tenant's SIP phone bridged by the
ooma-lab application; tenants alternate between two with distinct tones; every 4th call's bridge
is being recorded through ARI, which makes it softmix). All N calls are set up,
then all phones hold (real re-INVITE a=sendonly), then all unhold. Run twice in the same process:
with `ooma-moh serve ari` running, and without it (the baseline: what Asterisk does alone).

With the floor (issue 24; ``--no-floor`` skips it), a third run: a *bare* ARI application in this
process that knows each call's class in advance and does nothing on ChannelHold but start MOH
where Asterisk does not forward the hold (:class:`BareApp`). Printed: wrong holds for Asterisk
alone / the bare application / ours; ChannelHold -> music p50/p99 ours and bare; and what the
caller hears: from each recording, the time from asking the hold to the first 100 ms of the
tenant's music, ours / bare / Asterisk alone; goals p99 ours/bare <= 1.2 for both.

Prints, per N: share of holds where the caller heard anything but the tenant's tone while held
(any wrong-class or silent 100 ms window), the handler's ChannelHold -> music latency (its own
log: 0 when Asterisk forwarded the hold with the preset class), and the handler's CPU time and
peak memory.

If the lab Asterisk dies or fails a request during a run, the benchmark says so (exit status,
where its logs and any core file were copied: ``--keep-logs``, by default
``~/.cache/ooma-moh/bench-logs/``) instead of leaving only a traceback from the next ARI request.

    .venv/bin/python bench/hold.py [--calls 50,200] [--hold 2.0] [--stats on,off] [--keep-logs DIR]

``--stats off,on --repeat K`` runs the handler with hold statistics counted and written (issue 22)
and without (``hold_stats = false``), alternately K times each on the same kind of calls, and
prints the ratio of their pooled p99 ChannelHold -> music (goal <= 1.05), and of the handler's own
part of it (from the event reaching it to the music: what Asterisk's delivery does not blur).

``--repeat K`` runs K rounds of the floor, the handler and (``--compare DIR``: a directory holding
another copy of ``ooma_moh``, e.g. the code before a change, run with ``PYTHONPATH=DIR``) the other
handler, in an order that turns by one each round (nobody always runs first on a machine whose
speed drifts); figures are pooled over the rounds. ``--handler-logs DIR`` keeps each handler log,
``--profile DIR`` runs the handler under cProfile, ``--gc-log`` logs its garbage collections of
5 ms or more.

Holds of other kinds (call waiting, attended transfers, parked callers) mixed with plain ones, on
the ARI and the dialplan paths: bench/hold_mix.py.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hold_floor import BareApp, p99, pct, report_floor  # noqa: E402
from ooma_moh.app import build_service, build_syncer, open_catalog
from ooma_moh.config import Settings, settings_environ
from ooma_moh.errors import AriRequestFailed
from ooma_moh.holdstats import HoldDay
from ooma_moh.lab import TALK_TONE, LabAsterisk
from ooma_moh.lab.ari import AriHarness, Call
from ooma_moh.lab.tones import classify_windows
from ooma_moh.media import synth_sample

TONES = {"alpha": 440.0, "beta": 660.0}


def heard(wav_path: Path) -> list[float | None]:
    with wave.open(str(wav_path)) as wav:
        return classify_windows(
            wav.readframes(wav.getnframes()), wav.getframerate(), (*TONES.values(), TALK_TONE, 300.0)
        )


def proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds used and peak RSS (kB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    found = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    assert found is not None
    peak = int(found.group(1))
    return cpu, peak


#: ``serve ari`` with every garbage collection of 5 ms or more logged to stderr (``--gc-log``)
GC_LOGGED = """
import gc, runpy, sys, time
started = [0.0]
def pause(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    elif (ms := (time.perf_counter() - started[0]) * 1000) >= 5:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"
        sys.stderr.write(f"{stamp} gc generation {info['generation']} paused the handler {ms:.1f} ms\\n")
gc.callbacks.append(pause)
sys.argv = ["ooma_moh", "serve", "ari"]
runpy.run_module("ooma_moh", run_name="__main__", alter_sys=True)
"""


def run(
    lab: LabAsterisk,
    harness: AriHarness,
    n: int,
    hold_s: float,
    tag: str,
    before_hold: Callable[[list[tuple[str, Call]]], None] | None = None,
) -> dict[str, Any]:
    """N calls set up, held, unheld; for each, whether the caller heard anything but its tenant
    while held, and the heard gap: from asking the hold to the first 100 ms of the tenant's music
    in the caller's recording (inf: never)."""
    calls = []
    for i in range(n):
        tenant = "alpha" if i % 2 == 0 else "beta"
        # setting a call up over ARI takes ~0.85 s on a 2-core machine (N=200: ~170 s): each
        # recording must outlast the set-up of all of them, the holds and the unholds
        recorded = i % 4 == 3
        call = Call(harness, lab, f"{tag}_{i}{'_rec' if recorded else ''}", tenant, seconds=int(n * 1.1 + 30))
        if recorded:
            call.record_bridge()  # a recorded call: softmix, Asterisk does not forward the hold
        calls.append((tenant, call))
    if before_hold is not None:
        before_hold(calls)
    time.sleep(0.5)
    asked = {}
    for _, call in calls:
        asked[call.name] = call.hold()
    time.sleep(hold_s)
    ended = {}
    for _, call in calls:
        ended[call.name] = call.unhold()
    time.sleep(1.0)
    wrong, gaps = 0, []
    for tenant, call in calls:
        try:
            call.hangup("caller")
        except AriRequestFailed as exc:  # the recording already ended and Asterisk hung it up
            if exc.status != 404:
                raise
        everything = heard(call.finish())
        right, gap = listen(everything, TONES[tenant], asked[call.name], ended[call.name], hold_s)
        wrong += not right
        if not right and not tag.startswith("base"):  # Asterisk alone is always wrong: not shown
            print(
                f"       wrong hold {call.name} ({tenant}): heard from the hold on {runs(everything, asked[call.name])}"
            )
        gaps.append(gap)
    return {"wrong_share": wrong / n, "gaps_ms": gaps}


def listen(
    everything: list[float | None], expected: float, asked_s: float, ended_s: float, hold_s: float
) -> tuple[bool, float]:
    """Whether the caller heard only its tenant's tone (or talk) while held — from asking the hold
    to 0.5 s after asking the unhold; a silent window elsewhere in the call (at N = 200, single ones
    3-30 s after the unhold amid the phone's talk, in the bare application's calls as in ours)
    is not the hold's — and the heard gap: from asking the hold to the first 100 ms of the tenant's music
    (inf: never)."""
    start = int(asked_s * 10)
    windows = everything[start + 1 : int((ended_s + 0.5) * 10)]
    music = sum(1 for w in windows if w == expected)
    right = not [w for w in windows if w not in (expected, TALK_TONE)] and music >= (hold_s - 0.3) * 10
    first = next((i for i in range(start, len(everything)) if everything[i] == expected), None)
    return right, math.inf if first is None else max(0.0, first / 10 - asked_s) * 1000


def runs(windows: list[float | None], asked_s: float) -> str:
    """What a caller heard, as runs of 100 ms windows from the hold's request on (``660x12``:
    1.2 s of the 660 Hz tone; ``-``: silence or no tone)."""
    names = ("-" if window is None else f"{window:.0f}" for window in windows[int(asked_s * 10) :])
    return " ".join(f"{name}x{len(list(same))}" for name, same in itertools.islice(itertools.groupby(names), 12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,200")
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--stats", default="on", help="on, off, or off,on: one handler run each")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of the floor, each --stats value and --compare, in turn"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the bare ARI application's run")
    parser.add_argument("--profile", type=Path, help="a directory: run the handler under cProfile, one file a run")
    parser.add_argument("--handler-logs", type=Path, help="a directory: keep the handler's log of each run")
    parser.add_argument(
        "--gc-log", action="store_true", help="the handler logs each garbage collection of 5 ms or more"
    )
    parser.add_argument(
        "--compare", type=Path, help="a directory holding another copy of ooma_moh: its handler runs too, in turn"
    )
    logs = Path.home() / ".cache" / "ooma-moh" / "bench-logs" / time.strftime("hold-%Y%m%d-%H%M%S")
    parser.add_argument("--keep-logs", type=Path, default=logs)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ooma-moh-hold-") as tmp, LabAsterisk(Path(tmp) / "lab") as lab:
        try:
            measure(args, Path(tmp), lab)
        except Exception as exc:
            what = "went away" if not lab.running else f"failed a request ({exc})"
            raise SystemExit(
                f"the lab Asterisk {what} during the benchmark: " + lab.post_mortem(keep=args.keep_logs)
            ) from exc


def run_handler(
    lab: LabAsterisk,
    harness: AriHarness,
    settings: Settings,
    tmp: Path,
    n: int,
    hold_s: float,
    stats: str,
    baseline: dict[str, Any],
    profile: Path | None = None,
    logs: Path | None = None,
    pythonpath: Path | None = None,
    gc_log: bool = False,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """One run of N calls with `serve ari` (hold statistics ``stats``: on…/off…); prints what it
    measured and returns the ChannelHold -> music of every hold, the handler's own part of it
    for the holds it started, the heard gaps, and Asterisk's delivery of those holds (ms)."""
    log = Path(tmp) / f"handler-{n}-{stats}.log"
    env = {**os.environ, **settings_environ(settings), "OOMA_MOH_HOLD_STATS": str(stats.startswith("on")).lower()}
    if pythonpath is not None:  # --compare: another copy of the package (e.g. before a change)
        env["PYTHONPATH"] = str(pythonpath)
    before = sum(d.holds for d in hold_days(settings))
    with open(log, "w") as stderr:  # the handler keeps its own descriptor
        # with --profile, the handler runs under cProfile (written when SIGTERM stops it)
        profiling = ["-m", "cProfile", "-o", str(profile / f"handler-{n}-{stats}.prof")] if profile else []
        command = ["-c", GC_LOGGED] if gc_log else [*profiling, "-m", "ooma_moh", "serve", "ari"]
        proc = subprocess.Popen([sys.executable, *command], env=env, stderr=stderr)
    try:  # a run that fails must not leave the handler behind
        while "resynced" not in log.read_text():
            time.sleep(0.05)
        cpu0, _ = proc_usage(proc.pid)
        ours = run(lab, harness, n, hold_s, f"ours{n}{stats}")
        cpu1, peak = proc_usage(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    if logs:
        (logs / log.name).write_text(text)
    delays = [float(x) for x in re.findall(r"to_music_ms=([\d.]+)", text)]
    started = re.findall(r"action=started .*?to_music_ms=([\d.]+) delivered_after_ms=([\d.]+)", text)
    actions = re.findall(r"hold action=(\w+)", text)
    q = statistics.quantiles(delays, n=100) if len(delays) > 1 else [0.0] * 99
    counted = sum(d.holds for d in hold_days(settings)) - before
    print(
        f"N={n}, statistics {stats}: holds with a wrong or silent window: with handler {ours['wrong_share']:.0%},"
        f" without {baseline['wrong_share']:.0%}; holds counted in the catalog {counted}"
    )
    print(
        f"       ChannelHold -> music (handler log, {len(delays)} holds): p50 {q[49]:.1f} ms,"
        f" p99 {q[98]:.1f} ms; actions {dict((a, actions.count(a)) for a in set(actions))}"
    )
    if len(started) > 1:
        total = statistics.quantiles([float(t) for t, _ in started], n=100)
        delivered = statistics.quantiles([float(d) for _, d in started], n=100)
        print(
            f"       holds we started ({len(started)}): p50/p99 to music {total[49]:.1f}/{total[98]:.1f} ms,"
            f" of which Asterisk's delivery of ChannelHold {delivered[49]:.1f}/{delivered[98]:.1f} ms"
        )
    print(
        f"       heard gap p99 {pct(ours['gaps_ms'], 99):.0f} ms; handler CPU {cpu1 - cpu0:.2f} s for {n} calls,"
        f" peak RSS {peak / 1024:.1f} MB"
    )
    return delays, [float(t) - float(d) for t, d in started], ours["gaps_ms"], [float(d) for _, d in started]


def hold_days(settings: Settings) -> list[HoldDay]:
    """Every tenant's stored hold days (today and yesterday, UTC)."""
    catalog = open_catalog(settings, writable=False)
    try:
        last = datetime.now(UTC).date()
        return [d for tenant in TONES for d in catalog.hold_days(tenant, last - timedelta(days=1), last)]
    finally:
        catalog.close()


def run_bare(
    lab: LabAsterisk, harness: AriHarness, settings: Settings, n: int, hold_s: float, tag: str
) -> dict[str, Any]:
    """One run of N calls with the floor (:class:`BareApp`) instead of the handler."""
    bare = BareApp(lab, settings.ari_app).start()
    once = run(lab, harness, n, hold_s, tag, before_hold=bare.prepare)
    bare.stop()
    once["to_music_ms"], once["delivered_ms"] = bare.to_music_ms, bare.delivered_ms
    print(
        f"N={n} bare run {tag}: p99 ChannelHold -> music {pct(bare.to_music_ms, 99):.0f} ms"
        f" (Asterisk's delivery of ChannelHold p50/p99 {pct(bare.delivered_ms, 50):.1f}"
        f"/{pct(bare.delivered_ms, 99):.1f} ms),"
        f" heard gap p99 {pct(once['gaps_ms'], 99):.0f} ms, wrong {once['wrong_share']:.0%}"
    )
    return once


def measure(args: argparse.Namespace, tmp: Path, lab: LabAsterisk) -> None:
    """Asterisk alone, then for each of ``--repeat`` rounds the floor, the handler (each
    ``--stats`` value) and the ``--compare`` copy, in an order that turns by one each round
    (nobody always runs first on a machine whose speed drifts), for each N."""
    settings = Settings(**lab.settings_overrides())
    service = build_service(settings)
    for tenant, freq in TONES.items():
        sample = synth_sample(settings, Path(tmp) / f"{tenant}.mp3", freq, 5.0)
        service.upload(tenant, sample, accept_disclaimer=True, accepted_by="bench")
    build_syncer(settings, service).run(None)
    harness = AriHarness(lab).start()
    turns = ([] if args.no_floor else ["bare"]) + args.stats.split(",") + ([] if args.compare is None else ["compared"])
    for n in (int(x) for x in args.calls.split(",")):
        baseline = run(lab, harness, n, args.hold, f"base{n}")
        floor: dict[str, Any] = {"wrong": [], "to_music_ms": [], "gaps_ms": [], "delivered_ms": []}
        pooled: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {}
        for k in range(args.repeat):
            for turn in turns[k % len(turns) :] + turns[: k % len(turns)]:
                if turn == "bare":
                    once = run_bare(lab, harness, settings, n, args.hold, f"bare{n}_{k}")
                    floor["wrong"].append(once["wrong_share"])
                    floor["to_music_ms"].extend(once["to_music_ms"])
                    floor["gaps_ms"].extend(once["gaps_ms"])
                    floor["delivered_ms"].extend(once["delivered_ms"])
                    continue
                compared = turn == "compared"  # --compare: the other copy of the package, hold statistics on
                label = f"oncompared{k}" if compared else f"{turn}{k}"
                runs = run_handler(
                    lab,
                    harness,
                    settings,
                    tmp,
                    n,
                    args.hold,
                    label,
                    baseline,
                    None if compared else args.profile,
                    args.handler_logs,
                    args.compare if compared else None,
                    args.gc_log,
                )
                for kept, more in zip(pooled.setdefault(turn, ([], [], [], [])), runs, strict=True):
                    kept.extend(more)
        report(args, n, baseline, floor, pooled)
    harness.stop()
    service.catalog.close()


def report(
    args: argparse.Namespace,
    n: int,
    baseline: dict[str, Any],
    floor: dict[str, Any],
    pooled: dict[str, tuple[list[float], list[float], list[float], list[float]]],
) -> None:
    """The pooled comparisons: against the floor, and statistics on/off."""
    if floor["wrong"]:
        floor["wrong_share"] = max(floor["wrong"])
        report_floor(n, baseline, floor, pooled.get("on") or pooled["off"])
        if "compared" in pooled:
            print(f"N={n} the handler from {args.compare}:")
            report_floor(n, baseline, floor, pooled["compared"])
    if "on" in pooled and "off" in pooled:
        for what, i in (("ChannelHold -> music, every hold", 0), ("the handler's own part, holds it started", 1)):
            on, off = (p99(pooled[s][i]) for s in ("on", "off"))
            print(
                f"N={n} pooled over {args.repeat} runs each: p99 {what}: on {on:.1f} ms, off {off:.1f} ms,"
                f" ratio {on / off if off else float('nan'):.2f} (goal <= 1.05)"
            )


if __name__ == "__main__":
    main()
