"""Mixed hold benchmark on the lab Asterisk (issue 12): N concurrent callers held in four ways.

Callers come in groups of five, tenants alternating between groups (alpha 440 Hz, beta 660 Hz):
- **plain**: an ARI-bridged call; the phone holds (re-INVITE a=sendonly) for ``--hold`` s;
- **call waiting** (two callers on one tenant's phone): the phone holds the first, talks to the
  second, then swaps: holds the second and takes the first back;
- **attended transfer**: a dialplan call (FastAGI route on the caller); the phone starts an
  attended transfer (DTMF ``*2`` + ``2``), consults for ``--hold`` s, hangs up: the transfer
  completes;
- **park**: a dialplan call that parks itself (Park(), lot ``default``) for the whole run.

All N calls are set up first, then the holds, swaps and transfers start together. Run twice in
the same process on the same lab: without ooma-moh (no ARI handler; the dialplan calls run no
route: what Asterisk does alone), then with it (`ooma-moh serve ari` and `ooma-moh serve agi`).
A hold is *wrong* if any 100 ms window while it lasts (its first and last 300 ms left out, the
recording's drift; a transfer's from 0.8 s after the phone sends ``*22``) is anything but the
tenant's tone: `default`, the other tenant, talk, silence.
Prints, per N and kind, the share of wrong holds with and without ooma-moh.

    .venv/bin/python bench/hold_mix.py [--calls 50,200] [--hold 3.0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ooma_moh.app import build_service, build_syncer  # noqa: E402
from ooma_moh.config import Settings, settings_environ  # noqa: E402
from ooma_moh.lab import TALK_TONE, LabAsterisk, free_port  # noqa: E402
from ooma_moh.lab.ari import AriHarness, Call  # noqa: E402
from ooma_moh.lab.dialplan import DialplanCall  # noqa: E402
from tests.audio import tone  # noqa: E402
from tests.integration.conftest import running_lab, tones_heard  # noqa: E402

TONES = {"alpha": 440.0, "beta": 660.0}
KINDS = ("plain", "call waiting", "attended transfer", "park")
PARK_SPACES = range(701, 761)  # ooma_moh/lab/conf/res_parking.conf
#: an attended transfer's hold starts once Asterisk has read "*2" (sent as 100 ms tones 200 ms apart)
DTMF_S = 0.8


@dataclass
class Held:
    """One caller's recording and the periods (offsets from its start) it must hear its tenant."""

    kind: str
    tenant: str
    call: Call | DialplanCall
    periods: list[tuple[float, float]] = field(default_factory=list)
    #: dialplan calls: when the phone started talking (offset), to find the recording's own start,
    #: later than ``call.started`` by the originate command's latency (a second under load)
    talk_at: float | None = None


def wrong(held: Held, wav: Path) -> bool:
    windows = tones_heard(wav, list(TONES.values()))
    expected = TONES[held.tenant]
    shift = 0.0
    if held.talk_at is not None and TALK_TONE in windows:
        shift = held.talk_at - windows.index(TALK_TONE) / 10
    for start, end in ((s - shift, e - shift) for s, e in held.periods):
        part = windows[int((start + 0.3) * 10) : int((end - 0.3) * 10)]
        if not part or any(w != expected for w in part):
            if os.environ.get("HOLD_MIX_DEBUG"):
                print(
                    held.kind,
                    held.tenant,
                    (start, end),
                    [(round(i / 10, 1), w) for i, w in enumerate(windows) if i == 0 or windows[i - 1] != w],
                )
            return True
    return False


def run(lab: LabAsterisk, harness: AriHarness, n: int, hold_s: float, tag: str, route: bool) -> dict[str, list[bool]]:
    """One run of ``n`` callers; per kind, whether each hold was wrong."""
    seconds = int(n * 1.3 + 6 * hold_s + 40)  # outlasts the set-up of every call, then the holds
    calls, plain, waiting, transfers = place_calls(lab, harness, n, tag, route, seconds)
    time.sleep(1.0)
    hold_and_release(harness, plain, waiting, transfers, hold_s)
    for h in calls:
        if h.kind == "park":
            h.periods = [(1.0, elapsed(h))]
        with contextlib.suppress(Exception):  # the recording ended and Asterisk hung up already
            harness.request("DELETE", f"/channels/{h.call.caller}") if isinstance(h.call, Call) else None
    lab.cli("channel request hangup all")  # dialplan callers, parked ones and the rest
    result: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    for h in calls:
        result[h.kind].append(wrong(h, h.call.finish()))
    return result


def elapsed(h: Held) -> float:
    """Seconds since the held call's recording began."""
    return time.monotonic() - h.call.started


Placed = tuple[list[Held], list[Held], list[tuple[Held, Held]], list[tuple[Held, str]]]


def place_calls(lab: LabAsterisk, harness: AriHarness, n: int, tag: str, route: bool, seconds: int) -> Placed:
    """``n`` callers, a fifth of each kind: (every call, plain, call-waiting pairs, transfers)."""
    calls: list[Held] = []
    plain: list[Held] = []
    waiting: list[tuple[Held, Held]] = []
    transfers: list[tuple[Held, str]] = []
    parks = iter(PARK_SPACES)
    for g in range(n // 5):
        tenant = "alpha" if g % 2 == 0 else "beta"
        via = tenant if route else "none"
        name = f"{tag}_{g}"
        plain.append(Held("plain", tenant, Call(harness, lab, f"{name}_p", tenant, seconds)))
        waiting.append(
            (
                Held("call waiting", tenant, Call(harness, lab, f"{name}_w1", tenant, seconds)),
                Held("call waiting", tenant, Call(harness, lab, f"{name}_w2", tenant, seconds)),
            )
        )
        xfer = DialplanCall(harness, lab, f"{name}_x", seconds, f"tdial-{name}_x-{via}@ooma-lab-hold")
        talk_at = xfer.answer_phone(timeout=60)
        assert xfer.phone is not None
        transfers.append((Held("attended transfer", tenant, xfer, talk_at=talk_at), xfer.phone))
        park = DialplanCall(harness, lab, f"{name}_k", seconds, f"park-default-{next(parks)}-{via}@ooma-lab-hold")
        calls.append(Held("park", tenant, park, [(1.0, 0.0)]))  # the end is set when the run ends
    calls += plain + [h for pair in waiting for h in pair] + [h for h, _ in transfers]
    return calls, plain, waiting, transfers


def hold_and_release(
    harness: AriHarness,
    plain: list[Held],
    waiting: list[tuple[Held, Held]],
    transfers: list[tuple[Held, str]],
    hold_s: float,
) -> None:
    """Every kind holds, then releases (call waiting swaps to its second call); each held
    period is recorded on its call."""
    starts = {id(h): elapsed(h) for h in plain}
    for h in plain:
        h.call.hold()
    for first, _ in waiting:
        starts[id(first)] = elapsed(first)
        first.call.hold()
    for h, _ in transfers:
        starts[id(h)] = elapsed(h) + DTMF_S
        h.call.dtmf("*22")
    for _ in transfers:  # the consulted phone answers and talks
        consulted = harness.wait_event("StasisStart", lambda e: e["args"] == ["phone-xfer"], 60)
        harness.request("POST", f"/channels/{consulted['channel']['id']}/moh", mohClass="lab-talk")
    time.sleep(max(0.0, hold_s - 0.5))
    for h in plain:
        h.periods.append((starts[id(h)], elapsed(h)))
        h.call.unhold()
    for first, second in waiting:
        starts[id(second)] = elapsed(second)
        second.call.hold()
        first.periods.append((starts[id(first)], elapsed(first)))
        first.call.unhold()
    for h, first_phone in transfers:
        h.periods.append((starts[id(h)], elapsed(h)))
        harness.request("DELETE", f"/channels/{first_phone}")  # the transfer completes
    time.sleep(hold_s)
    for _, second in waiting:
        second.periods.append((starts[id(second)], elapsed(second)))
        second.call.unhold()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,200")
    parser.add_argument("--hold", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ooma-moh-holdmix-") as tmp, running_lab(Path(tmp) / "lab") as lab:
        settings = Settings(**lab.settings_overrides())
        service = build_service(settings)
        for tenant, freq in TONES.items():
            service.upload(
                tenant, tone(Path(tmp) / f"{tenant}.wav", freq, seconds=5), accept_disclaimer=True, accepted_by="bench"
            )
        build_syncer(settings, service).run(None)
        harness = AriHarness(lab).start()
        env = {**os.environ, **settings_environ(settings)}
        agi_port = free_port()
        with open(Path(tmp) / "agi.log", "w") as stderr:  # the server keeps its own descriptor
            agi = subprocess.Popen(
                [sys.executable, "-m", "ooma_moh", "serve", "agi", "--listen", f"127.0.0.1:{agi_port}"],
                env=env,
                stderr=stderr,
            )
        lab.cli(f"dialplan set global OOMA_MOH_AGI agi://127.0.0.1:{agi_port}")
        try:
            for n in (int(x) for x in args.calls.split(",")):
                baseline = run(lab, harness, n, args.hold, f"base{n}", route=False)
                log = Path(tmp) / f"handler-{n}.log"
                with open(log, "w") as stderr:  # the handler keeps its own descriptor
                    handler = subprocess.Popen(
                        [sys.executable, "-m", "ooma_moh", "serve", "ari"], env=env, stderr=stderr
                    )
                while "resynced" not in log.read_text():
                    time.sleep(0.05)
                ours = run(lab, harness, n, args.hold, f"ours{n}", route=True)
                handler.terminate()
                handler.wait(10)
                print(f"N={n} ({n // 5} of each group), wrong holds with ooma-moh / without:")
                for kind in KINDS:
                    w, b = ours[kind], baseline[kind]
                    print(f"  {kind:18s} {sum(w) / len(w):5.0%} of {len(w):3d}   {sum(b) / len(b):5.0%} of {len(b):3d}")
                every_w = [x for k in KINDS for x in ours[k]]
                every_b = [x for k in KINDS for x in baseline[k]]
                print(
                    f"  {'all':18s} {sum(every_w) / len(every_w):5.0%} of {len(every_w):3d}"
                    f"   {sum(every_b) / len(every_b):5.0%} of {len(every_b):3d}",
                    flush=True,
                )
        finally:
            agi.terminate()
            harness.stop()
            service.catalog.close()


if __name__ == "__main__":
    main()
