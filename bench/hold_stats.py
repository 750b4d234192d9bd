"""Hold statistics' own costs (issue 22), each against a baseline run in the same process.

1. Counting: the CPU `serve ari` spends per 1,000 holds on the statistics — following each hold
   from its events (:class:`~ooma_moh.ari.tally.HoldTally`) and writing the figures once a
   "second" (:class:`~ooma_moh.ari.tally.StatsWriter` into a real SQLite catalog, 10 writes per
   1,000 holds for 50 tenants) — against the baseline of parsing the same events, which the
   handler does anyway.
2. Reading: ``GET …/moh/stats?days=400`` for one tenant with 100,000 holds on each of the 400 days
   (every length bucket used): the catalog read and the summary the handler answers with, and
   each part alone. Goal: under 50 ms.

    .venv/bin/python bench/hold_stats.py [--holds 20000] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ooma_moh.ari.events import Event
from ooma_moh.ari.tally import HoldTally, StatsWriter
from ooma_moh.holdstats import BUCKET_COUNT, MAX_DAYS, HoldDay, day_range, summary
from ooma_moh.storage import SqliteCatalog

TENANTS = [f"tenant{n:02d}" for n in range(50)]


def events(holds: int) -> list[dict[str, Any]]:
    """ChannelHold then ChannelUnhold for ``holds`` holds, as the WebSocket delivers them."""
    stamp = datetime.now(UTC)
    out = []
    for n in range(holds):
        for kind, seconds in (("ChannelHold", 0.0), ("ChannelUnhold", 5.0 + n % 90)):
            at = (stamp + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
            channel = {"id": f"user-{n}", "name": f"PJSIP/u-{n}", "channelvars": {"OOMA_MOH_TENANT": ""}}
            out.append({"type": kind, "timestamp": at, "channel": channel})
    return out


def cpu(work: Callable[[], None], runs: int) -> float:
    """Median CPU seconds of ``work``."""
    times = []
    for _ in range(runs):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return statistics.median(times)


def counting(holds: int, runs: int, tmp: Path) -> None:
    stream = events(holds)
    catalog = SqliteCatalog(tmp / "count.sqlite3")

    def baseline() -> None:
        for data in stream:
            Event.from_json(data)

    def ours() -> None:
        tally = HoldTally()
        writer = StatsWriter(tally, lambda: catalog, retention_days=400, run_blocking=inline)
        for i, data in enumerate(stream):
            event = Event.from_json(data)
            assert event.channel is not None
            tally.observe(event, ["caller"])
            if event.type == "ChannelHold":
                tally.classify(event.channel.id, TENANTS[i // 2 % len(TENANTS)], fallback=False)
            if (i + 1) % (len(stream) // (holds // 100)) == 0:  # a write per 100 holds
                asyncio.run(writer.flush())
        asyncio.run(writer.flush())

    base, mine = cpu(baseline, runs), cpu(ours, runs)
    print(f"counting {holds} holds: parse only {base * 1e3:.0f} ms CPU, parse + count + write {mine * 1e3:.0f} ms")
    print(f"  statistics' own CPU per 1,000 holds: {(mine - base) / holds * 1e6:.1f} ms (ratio {mine / base:.2f})")


async def inline(work: Callable[..., object], *args: object) -> object:
    return work(*args)


def reading(runs: int, tmp: Path) -> None:
    catalog = SqliteCatalog(tmp / "read.sqlite3")
    first, last = day_range(MAX_DAYS)
    rows = []
    for n in range(MAX_DAYS):
        day = HoldDay(first + timedelta(days=n), 100_000, 100_000 * 40.0, 7_000, 30)
        day.buckets = {
            b: 100_000 // BUCKET_COUNT + (1 if b < 100_000 % BUCKET_COUNT else 0) for b in range(BUCKET_COUNT)
        }
        rows.append(("acme", day))
    catalog.add_hold_days(rows)

    stored = catalog.hold_days("acme", first, last)

    def read() -> None:
        catalog.hold_days("acme", first, last)

    def answer() -> None:
        summary(stored, first, last)

    def ours() -> None:
        answered = summary(catalog.hold_days("acme", first, last), first, last)
        assert answered["total"]["holds"] == 100_000 * MAX_DAYS  # type: ignore[index]

    mine = wall(ours, runs)
    print(f"GET …/stats?days=400 at 100,000 holds a day: {mine * 1e3:.1f} ms (goal < 50 ms):")
    print(f"  the catalog read {wall(read, runs) * 1e3:.1f} ms, the summary {wall(answer, runs) * 1e3:.1f} ms")
    catalog.close()


def wall(work: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ooma-moh-holdstats-") as tmp:
        counting(args.holds, args.runs, Path(tmp))
        reading(args.runs, Path(tmp))
    print(f"({date.today().isoformat()})")


if __name__ == "__main__":
    main()
