"""Replay benchmark: the hold handler fed event streams over an in-memory ARI (no Asterisk).

The streams have the shape of the lab's calls (tests/integration/test_ari_hold.py): per call, a
tenant's phone and a caller enter a bridge (every 4th bridge is softmix with a recorder in it),
then the phone holds, then unholds, then both leave and hang up. The fake ARI answers each request
after ``--latency`` ms (a REST round trip to a local Asterisk).

1. burst: N calls set up, then N ChannelHold at once. Per hold, the time from its arrival to the
   end of its handling (music started, or the preset known to play; each hold's follow-up, put off
   until the burst quiets, is not timed): events handled one at a time in
   arrival order (the baseline: the handler before issue 9) against keyed by bridge
   (``HoldHandler.dispatch``), same process, same fake.
2. ceiling: with no latency, how many events a second one core handles (whole call streams).
3. hold statistics (issue 22): the keyed burst and the ceiling with the statistics counted
   (``HoldTally``) and without (``NoTally``), alternately ``--stats-runs`` times each, same
   process: ratio of the burst's p99 and of the ceiling's events/s (goal: p99 ratio <= 1.05).

    .venv/bin/python bench/replay.py [--calls 200] [--latency 2.0] [--ceiling-calls 5000] [--stats-runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ooma_moh.ari.hold import HoldHandler  # noqa: E402
from ooma_moh.ari.tally import HoldTally, NoTally  # noqa: E402
from tests.unit.fake_ari import FakeAri, inline, resolver  # noqa: E402


class SlowAri(FakeAri):
    """Every request takes ``latency`` seconds, like a REST round trip."""

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.latency = latency

    async def _wait(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)

    async def get_channel(self, channel_id):  # type: ignore[no-untyped-def]
        await self._wait()
        return await super().get_channel(channel_id)

    async def get_bridge(self, bridge_id):  # type: ignore[no-untyped-def]
        await self._wait()
        return await super().get_bridge(bridge_id)

    async def get_variable(self, channel_id, name):  # type: ignore[no-untyped-def]
        await self._wait()
        return await super().get_variable(channel_id, name)

    async def set_variable(self, channel_id, name, value):  # type: ignore[no-untyped-def]
        await self._wait()
        await super().set_variable(channel_id, name, value)

    async def start_moh(self, channel_id, moh_class):  # type: ignore[no-untyped-def]
        await self._wait()
        await super().start_moh(channel_id, moh_class)

    async def stop_moh(self, channel_id):  # type: ignore[no-untyped-def]
        await self._wait()
        await super().stop_moh(channel_id)


def build(ari: FakeAri, calls: int) -> None:
    for i in range(calls):
        tenant = "alpha" if i % 2 else "beta"
        ari.channel(f"u{i}", f"PJSIP/{tenant}-{i}-{i:08x}", tenant=tenant)
        ari.channel(f"c{i}", f"PJSIP/trunk-{i + 1_000_000:08x}")
        members = [f"u{i}", f"c{i}"]
        technology = "simple_bridge"
        if i % 4 == 0:
            ari.channel(f"r{i}", f"Recorder/rec-{i:08x}")
            members.append(f"r{i}")
            technology = "softmix"
        ari.bridge(f"b{i}", members, technology)


async def setup(handler: HoldHandler, ari: FakeAri, calls: int) -> None:
    for i in range(calls):
        for cid in ari.bridges[f"b{i}"]["channels"]:
            await handler.handle(ari.event("ChannelEnteredBridge", cid, f"b{i}"))


def tally(stats: bool) -> HoldTally:
    return HoldTally() if stats else NoTally()


async def burst(calls: int, latency: float, concurrent: bool, stats: bool = True) -> list[float]:
    """Per-hold latency (ms) from arrival to the end of its handling."""
    ari = SlowAri(0.0)
    build(ari, calls)
    handler = HoldHandler(ari, resolver({"alpha", "beta"}), run_blocking=inline, tally=tally(stats))
    await setup(handler, ari, calls)
    ari.latency = latency / 1000
    done: list[float] = []
    start = time.perf_counter()
    if concurrent:
        tasks = []
        for i in range(calls):
            await handler.dispatch(ari.event("ChannelHold", f"u{i}"))
            tasks.extend(handler.dispatcher._tails.values())
        for task in set(tasks):
            task.add_done_callback(lambda _t: done.append((time.perf_counter() - start) * 1000))
        await handler.dispatcher.drain()
        # each hold's follow-up (the forwarded hold's mark, the fresh bridge) runs after the
        # burst (ooma_moh/ari/followup.py): not part of a hold's time to handled
        await handler.followups.flush()
    else:
        for i in range(calls):
            await handler.handle(ari.event("ChannelHold", f"u{i}"))
            done.append((time.perf_counter() - start) * 1000)
    assert sum(handler.stats.actions.values()) == calls, handler.stats.actions
    return done


async def ceiling(calls: int, stats: bool = True) -> tuple[int, float]:
    """Events and seconds for ``calls`` whole call streams, no latency, one at a time."""
    ari = FakeAri()
    build(ari, calls)
    handler = HoldHandler(ari, resolver({"alpha", "beta"}), run_blocking=inline, tally=tally(stats))
    events = 0
    start = time.perf_counter()
    for i in range(calls):
        bridge = f"b{i}"
        members = ari.bridges[bridge]["channels"]
        stream = [ari.event("ChannelEnteredBridge", cid, bridge) for cid in members]
        stream += [ari.event("ChannelHold", f"u{i}"), ari.event("ChannelUnhold", f"u{i}")]
        stream += [ari.event("ChannelLeftBridge", cid, bridge) for cid in members]
        stream += [ari.event("ChannelDestroyed", cid) for cid in members]
        ari.bridge(bridge, [])
        stream.append(ari.event("BridgeDestroyed", None, bridge))
        for event in stream:
            await handler.handle(event)
        events += len(stream)
    return events, time.perf_counter() - start


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--latency", type=float, default=2.0, help="ms per ARI request")
    parser.add_argument("--ceiling-calls", type=int, default=5000)
    parser.add_argument("--stats-runs", type=int, default=5)
    args = parser.parse_args()
    seq = asyncio.run(burst(args.calls, args.latency, concurrent=False))
    par = asyncio.run(burst(args.calls, args.latency, concurrent=True))
    print(f"burst of {args.calls} holds, {args.latency:g} ms per ARI request:")
    print(f"  one at a time (baseline)  p50 {pct(seq, 50):8.1f} ms  p99 {pct(seq, 99):8.1f} ms")
    print(f"  keyed by bridge           p50 {pct(par, 50):8.1f} ms  p99 {pct(par, 99):8.1f} ms")
    print(f"  ratio p99 keyed/baseline: {pct(par, 99) / pct(seq, 99):.3f}")
    events, seconds = asyncio.run(ceiling(args.ceiling_calls))
    print(
        f"ceiling: {events:,} events of {args.ceiling_calls:,} calls in {seconds:.2f} s on one core:"
        f" {events / seconds:,.0f} events/s ({args.ceiling_calls / seconds:,.0f} calls/s)"
    )
    with_stats(args)


def with_stats(args: argparse.Namespace) -> None:
    """Part 3: statistics on and off, alternating, pooled."""
    holds: dict[bool, list[float]] = {True: [], False: []}
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.stats_runs):
        for stats in (False, True):
            holds[stats] += asyncio.run(burst(args.calls, args.latency, concurrent=True, stats=stats))
            events, seconds = asyncio.run(ceiling(args.ceiling_calls, stats=stats))
            rates[stats].append(events / seconds)
    on, off = pct(holds[True], 99), pct(holds[False], 99)
    print(f"hold statistics, {args.stats_runs} runs each, alternating:")
    print(f"  keyed burst p99: statistics on {on:.1f} ms, off {off:.1f} ms: ratio {on / off:.3f} (goal <= 1.05)")
    rate_on, rate_off = statistics.median(rates[True]), statistics.median(rates[False])
    print(
        f"  ceiling: on {rate_on:,.0f} events/s, off {rate_off:,.0f}: the statistics cost"
        f" {(1 / rate_on - 1 / rate_off) * 1e6:.1f} µs per event (ratio off/on {rate_off / rate_on:.3f})"
    )


if __name__ == "__main__":
    main()
