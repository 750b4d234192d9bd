"""The hold statistics' rules (ooma_moh/holdstats.py, ooma_moh/ari/tally.py): buckets and
percentiles, when a hold ends and how it counts, the writer's batching, and the hold handler
feeding them on both paths (with the in-memory ARI)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ooma_moh import holdstats
from ooma_moh.ari.events import Channel, Event
from ooma_moh.ari.tally import HoldTally, StatsWriter
from ooma_moh.errors import StorageError
from ooma_moh.holdstats import BUCKETS_S, HoldDay, bucket_of, quantile, summary
from ooma_moh.storage.memory import MemoryCatalog
from tests.unit.test_hold_rules import enter, run, scene, two_party

T0 = datetime(2026, 12, 1, 23, 59, 50, tzinfo=UTC)


def ev(kind: str, cid: str, at: float) -> Event:
    return Event(kind, Channel(cid, f"PJSIP/{cid}"), None, T0 + timedelta(seconds=at))


def test_buckets_rise_and_percentiles_are_exact_to_a_bucket() -> None:
    assert all(a < b for a, b in zip(BUCKETS_S, BUCKETS_S[1:], strict=False))
    assert (bucket_of(0.0), bucket_of(1.0), bucket_of(1.001), bucket_of(30.0), bucket_of(31.0)) == (0, 0, 1, 29, 30)
    assert bucket_of(10_000.0) == len(BUCKETS_S)  # the open bucket
    lengths = [4.2, 6.5, 8.1, 21.0, 21.4, 37.0, 60.0, 95.0, 300.0, 2000.0]
    day = HoldDay(date(2026, 12, 1))
    for seconds in lengths:
        day.count(seconds, hung_up=False, fallback=False)
    for q, true in ((0.5, 21.2), (0.9, 300.0)):  # the true value within its bucket's width
        lower, upper = holdstats.bucket_bounds(bucket_of(true))
        got = quantile(day.buckets, q)
        assert got is not None and lower <= got <= upper, (q, got)
    assert quantile({}, 0.5) is None


def test_summary_has_every_day_with_zeros_and_a_total_that_merges_buckets() -> None:
    a, b = HoldDay(date(2026, 12, 1)), HoldDay(date(2026, 12, 3))
    a.count(10.0, hung_up=True, fallback=False)
    b.count(20.0, hung_up=False, fallback=True)
    out = summary([a, b], date(2026, 11, 30), date(2026, 12, 3))
    days: Any = out["days"]
    assert [d["date"] for d in days] == ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"]
    assert days[0] == {"date": "2026-11-30", "holds": 0, "seconds": 0.0, "median_s": 0.0, "p90_s": 0.0,
                       "hung_up": 0, "fallback": 0}  # fmt: skip
    assert out["total"] == {"holds": 2, "seconds": 30.0, "median_s": 10.0, "p90_s": 19.8, "hung_up": 1, "fallback": 1}


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([("ChannelUnhold", "user", 12.5)], (12.5, False)),
        ([("ChannelHangupRequest", "caller", 7.0), ("ChannelLeftBridge", "caller", 7.1)], (7.0, True)),
        ([("ChannelDestroyed", "caller", 3.0)], (3.0, True)),
        ([("ChannelHangupRequest", "user", 4.0), ("ChannelHangupRequest", "caller", 4.2)], (4.0, False)),
        ([("ChannelLeftBridge", "user", 9.0)], (9.0, False)),
        ([("ChannelLeftBridge", "caller", 2.0)], (2.0, False)),  # moved away, not a hang-up
    ],
    ids=["unhold", "held-hangs-up", "held-destroyed", "holder-hangs-up", "holder-leaves", "held-leaves"],
)
def test_a_hold_ends_by_the_first_rule_that_applies(
    events: list[tuple[str, str, float]], expected: tuple[float, bool]
) -> None:
    tally = HoldTally()
    tally.observe(ev("ChannelHold", "user", 0.0), ["caller"])
    tally.classify("user", "acme", fallback=False)
    for kind, cid, at in events:
        tally.observe(ev(kind, cid, at), [])
    (row,) = tally.take()
    seconds, hung_up = expected
    assert row[0] == "acme" and row[1].day == date(2026, 12, 1)  # the day it started (UTC), not ended
    assert (row[1].holds, row[1].seconds, row[1].hung_up) == (1, seconds, int(hung_up))
    assert tally.take() == [] and tally.open == {}


def test_only_classified_holds_with_a_tenant_that_played_music_count(monkeypatch: pytest.MonkeyPatch) -> None:
    tally = HoldTally()
    for holder in ("a", "b", "c", "d"):
        tally.observe(ev("ChannelHold", holder, 0.0), ["x"])
    tally.observe(ev("ChannelHold", "alone", 0.0), [])  # nobody to hold: not followed
    tally.classify("a", None, fallback=False)  # no tenant
    tally.discard("b")  # a conference
    tally.classify("c", "acme", fallback=True)
    for holder in ("a", "b", "c", "d"):
        tally.observe(ev("ChannelUnhold", holder, 5.0), [])
    tally.classify("d", "beta", fallback=False)  # known after the hold ended: still counted
    rows = dict(tally.take())
    assert set(rows) == {"acme", "beta"} and rows["acme"].fallback == 1 and "alone" not in tally.open
    tally.observe(ev("ChannelHold", "e", 0.0), ["x"])
    tally.observe(ev("ChannelUnhold", "e", 1.0), [])
    monkeypatch.setattr(time, "monotonic", lambda: 10**9)  # never classified: dropped in time
    assert tally.take() == [] and tally.ended == []


class FlakyStore(MemoryCatalog):
    def __init__(self) -> None:
        super().__init__()
        self.down, self.writes = False, 0
        self.pruned: list[date] = []

    def add_hold_days(self, rows: Any) -> None:
        if self.down:
            raise StorageError("unreachable", "the database is down")
        self.writes += 1
        super().add_hold_days(rows)

    def drop_hold_days_before(self, day: date) -> int:
        self.pruned.append(day)
        return super().drop_hold_days_before(day)


def test_writer_batches_keeps_what_failed_and_writes_the_rest_at_close() -> None:
    async def go() -> FlakyStore:
        tally, store = HoldTally(), FlakyStore()
        writer = StatsWriter(tally, lambda: store, retention_days=400, interval=3600)
        for n in range(50):  # 50 holds between two writes: one write
            tally.observe(ev("ChannelHold", f"h{n}", 0.0), ["x"])
            tally.classify(f"h{n}", "acme", fallback=False)
            tally.observe(ev("ChannelUnhold", f"h{n}", 2.0), [])
        await writer.flush()
        assert store.writes == 1 and store.pruned == [datetime.now(UTC).date() - timedelta(days=399)]
        store.down = True
        tally.observe(ev("ChannelHold", "late", 0.0), ["x"])
        tally.classify("late", "acme", fallback=False)
        tally.observe(ev("ChannelUnhold", "late", 1.0), [])
        await writer.flush()  # kept
        assert writer.unwritten and store.writes == 1
        store.down = False
        await writer.close()  # SIGTERM: written
        assert writer.unwritten == {} and store.writes == 2
        return store

    store = run(go())
    (day,) = store.hold_days("acme", date(2026, 12, 1), date(2026, 12, 1))
    assert (day.holds, day.seconds) == (51, 101.0)


def test_the_handler_counts_stasis_and_dialplan_holds_for_the_holders_tenant() -> None:
    """Stasis bridge: the tenant and the fallback come from the hold's own resolution. Dialplan
    bridge: looked up in the background; the held party left on ``default`` by a dialplan that
    does not set the class is a fallback (the tenant has a file)."""
    ari, handler = scene()
    two_party(ari)

    async def stasis() -> None:
        await enter(ari, handler, "user", "caller")
        await handler.handle(ari.event("ChannelHold", "user"))
        await handler.handle(ari.event("ChannelHangupRequest", "caller"))

    run(stasis())
    ((tenant, figures),) = handler.tally.take()
    assert (tenant, figures.holds, figures.hung_up, figures.fallback) == ("acme", 1, 1, 0)

    ari, handler = scene()
    two_party(ari)
    ari.outside = {"user", "caller"}
    ari.variables[("caller", "CHANNEL(musicclass)")] = "default"

    async def dialplan() -> None:
        await enter(ari, handler, "user", "caller")
        await handler.handle(ari.event("ChannelHold", "user"))
        await asyncio.gather(*handler._lookups)
        await handler.handle(ari.event("ChannelUnhold", "user"))

    run(dialplan())
    ((tenant, figures),) = handler.tally.take()
    assert (tenant, figures.holds, figures.hung_up, figures.fallback) == ("acme", 1, 0, 1)
    assert ari.actions == []  # the statistics changed nothing on the dialplan's channels
