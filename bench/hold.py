"""Hold benchmark on the lab Asterisk: N concurrent bridged calls, each held and unheld.

Each call is the lab's ARI setup (a recorded caller and a tenant's SIP phone bridged by the
ooma-lab application; tenants alternate between two with distinct tones; every 4th call's bridge
is being recorded through ARI, which makes it softmix). All N calls are set up,
then all phones hold (real re-INVITE a=sendonly), then all unhold. Run twice in the same process:
with `ooma-moh serve ari` running, and without it (the baseline: what Asterisk does alone).

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

Holds of other kinds (call waiting, attended transfers, parked callers) mixed with plain ones, on
the ARI and the dialplan paths: bench/hold_mix.py.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
    peak = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    return cpu, peak


def run(lab: LabAsterisk, harness: AriHarness, n: int, hold_s: float, tag: str) -> dict[str, float]:
    calls = []
    for i in range(n):
        tenant = "alpha" if i % 2 == 0 else "beta"
        # setting a call up over ARI takes ~0.85 s on a 2-core machine (N=200: ~170 s): each
        # recording must outlast the set-up of all of them, the holds and the unholds
        call = Call(harness, lab, f"{tag}_{i}", tenant, seconds=int(n * 1.1 + 30))
        if i % 4 == 3:
            call.record_bridge()  # a recorded call: softmix, Asterisk does not forward the hold
        calls.append((tenant, call))
    time.sleep(0.5)
    for _, call in calls:
        call.hold()
    time.sleep(hold_s)
    for _, call in calls:
        call.unhold()
    time.sleep(1.0)
    wrong = 0
    for tenant, call in calls:
        try:
            call.hangup("caller")
        except AriRequestFailed as exc:  # the recording already ended and Asterisk hung it up
            if exc.status != 404:
                raise
        windows = heard(call.finish())[1:-1]
        expected = TONES[tenant]
        music = sum(1 for w in windows if w == expected)
        others = [w for w in windows if w not in (expected, TALK_TONE)]
        if others or music < (hold_s - 0.3) * 10:
            wrong += 1
    return {"wrong_share": wrong / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,200")
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--stats", default="on", help="on, off, or off,on: one handler run each")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each --stats value, alternating")
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
    baseline: dict[str, float],
) -> tuple[list[float], list[float]]:
    """One run of N calls with `serve ari` (hold statistics ``stats``: on…/off…); prints what it
    measured and returns the ChannelHold -> music of every hold and the handler's own part of it
    for the holds it started (ms)."""
    log = Path(tmp) / f"handler-{n}-{stats}.log"
    env = {**os.environ, **settings_environ(settings), "OOMA_MOH_HOLD_STATS": str(stats.startswith("on")).lower()}
    before = sum(d.holds for d in hold_days(settings))
    with open(log, "w") as stderr:  # the handler keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "ooma_moh", "serve", "ari"], env=env, stderr=stderr)
    while "resynced" not in log.read_text():
        time.sleep(0.05)
    cpu0, _ = proc_usage(proc.pid)
    ours = run(lab, harness, n, hold_s, f"ours{n}{stats}")
    cpu1, peak = proc_usage(proc.pid)
    proc.terminate()
    proc.wait(10)
    text = log.read_text()
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
    print(f"       handler CPU {cpu1 - cpu0:.2f} s for {n} calls, peak RSS {peak / 1024:.1f} MB")
    return delays, [float(t) - float(d) for t, d in started]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else float("nan")


def hold_days(settings: Settings) -> list[HoldDay]:
    """Every tenant's stored hold days (today and yesterday, UTC)."""
    catalog = open_catalog(settings, writable=False)
    try:
        last = datetime.now(UTC).date()
        return [d for tenant in TONES for d in catalog.hold_days(tenant, last - timedelta(days=1), last)]
    finally:
        catalog.close()


def measure(args: argparse.Namespace, tmp: Path, lab: LabAsterisk) -> None:
    """Both runs (without and with the handler) for each N."""
    settings = Settings(**lab.settings_overrides())
    service = build_service(settings)
    for tenant, freq in TONES.items():
        sample = synth_sample(settings, Path(tmp) / f"{tenant}.mp3", freq, 5.0)
        service.upload(tenant, sample, accept_disclaimer=True, accepted_by="bench")
    build_syncer(settings, service).run(None)
    harness = AriHarness(lab).start()
    for n in (int(x) for x in args.calls.split(",")):
        baseline = run(lab, harness, n, args.hold, f"base{n}")
        pooled: dict[str, tuple[list[float], list[float]]] = {}
        for k in range(args.repeat):
            for stats in args.stats.split(","):
                delays, own = run_handler(lab, harness, settings, tmp, n, args.hold, f"{stats}{k}", baseline)
                pooled.setdefault(stats, ([], []))[0].extend(delays)
                pooled[stats][1].extend(own)
        if set(pooled) == {"on", "off"}:
            for what, i in (("ChannelHold -> music, every hold", 0), ("the handler's own part, holds it started", 1)):
                on, off = (p99(pooled[s][i]) for s in ("on", "off"))
                print(
                    f"N={n} pooled over {args.repeat} runs each: p99 {what}: on {on:.1f} ms, off {off:.1f} ms,"
                    f" ratio {on / off if off else float('nan'):.2f} (goal <= 1.05)"
                )
    harness.stop()
    service.catalog.close()


if __name__ == "__main__":
    main()
