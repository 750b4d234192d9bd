"""Hold statistics as ``serve ari`` sees them: holds followed from ARI events, counted per tenant
and UTC day (rules in :mod:`ooma_moh.holdstats`), written to the catalog in batches.

Off the hold's path by construction: :class:`HoldTally` only updates dictionaries, in event order
(from :meth:`~ooma_moh.ari.hold.HoldHandler.observe`); :class:`StatsWriter` writes what it counted
at most once per ``interval`` from a task of its own, through a thread. A hold ends, in order:

1. on the holder's ``ChannelUnhold``, ``ChannelLeftBridge``, ``ChannelHangupRequest`` or
   ``ChannelDestroyed`` — not hung up;
2. when the last of its held parties (the other real parties in the bridge when it began) hangs
   up (``ChannelHangupRequest``, else ``ChannelDestroyed``) — ``hung_up``; a held party that
   leaves the bridge without hanging up is no longer counted as held.

A hold is written once it has ended *and* its tenant is known (:meth:`HoldTally.classify`: the
handler on a Stasis bridge, a background lookup on a dialplan bridge); one without a tenant, or
that played no music (a conference, alone: :meth:`HoldTally.discard`), is not counted; one whose
tenant is still unknown :data:`UNCLASSIFIED_S` after it ended is dropped; one whose end was
missed while the events WebSocket was down (its channels gone, or an unhold :mod:`.resync` found
missed) is dropped at the reconnection (:meth:`HoldTally.forget_gone`, :meth:`HoldTally.discard`):
what is followed is bounded by the holds in progress. What was counted but not
yet written is lost on ``kill -9`` (at most one interval); SIGTERM writes it
(:meth:`StatsWriter.close`); a write that fails (the database down) is kept and retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .. import metrics
from ..errors import OomaMohError
from ..holdstats import HoldDay, day_of, is_tenant_id
from ..logsafe import printable
from ..storage.base import HoldStatistics
from .events import Event

log = logging.getLogger(__name__)

#: seconds an ended hold waits for its tenant before it is dropped
UNCLASSIFIED_S = 60.0
#: events that end a hold when they concern its holder (rule 1)
HOLDER_ENDS = frozenset({"ChannelUnhold", "ChannelLeftBridge", "ChannelHangupRequest", "ChannelDestroyed"})
#: events by which a held party hangs up (rule 2)
HANG_UPS = frozenset({"ChannelHangupRequest", "ChannelDestroyed"})
#: the events the tally needs that the hold handler itself does not act on
TALLY_ONLY = frozenset({"ChannelHangupRequest"})


@dataclass
class TalliedHold:
    """One hold being followed."""

    holder_id: str
    started: datetime
    held: set[str]
    tenant: str | None = None
    classified: bool = False
    fallback: bool = False
    seconds: float | None = None  # set when it ended
    hung_up: bool = False
    ended_at: float = 0.0  # monotonic, for UNCLASSIFIED_S


@dataclass
class HoldTally:
    """Holds in progress and ended, and the figures not yet taken for writing."""

    open: dict[str, TalliedHold] = field(default_factory=dict)
    #: held channel -> the holders holding it (so an event costs the same however many holds)
    held_by: dict[str, set[str]] = field(default_factory=dict)
    ended: list[TalliedHold] = field(default_factory=list)
    counted: dict[tuple[str, date], HoldDay] = field(default_factory=dict)

    def observe(self, event: Event, others: Sequence[str]) -> None:
        """Follow one event; ``others``: the holder's fellow real parties, for a ``ChannelHold``."""
        if event.channel is None:
            return
        channel_id, at = event.channel.id, event.timestamp or datetime.now(UTC)
        if event.type == "ChannelHold":
            if others and channel_id not in self.open:
                self.open[channel_id] = TalliedHold(channel_id, at, set(others))
                for held in others:
                    self.held_by.setdefault(held, set()).add(channel_id)
            return
        if event.type in HOLDER_ENDS and channel_id in self.open:
            self._end(self._close(channel_id), at, hung_up=False)
        if event.type not in HANG_UPS and event.type != "ChannelLeftBridge":
            return
        for holder in self.held_by.pop(channel_id, ()):
            hold = self.open[holder]
            hold.held.discard(channel_id)
            if not hold.held:
                self._end(self._close(holder), at, hung_up=event.type in HANG_UPS)

    def classify(self, holder_id: str, tenant: str | None, *, fallback: bool) -> None:
        """The hold's tenant (None, or not a valid tenant id: not counted) and whether it fell back
        to ``default``."""
        tenant = tenant if is_tenant_id(tenant) else None  # a channel variable of any text never reaches the catalog
        hold = self.open.get(holder_id) or next((h for h in self.ended if h.holder_id == holder_id), None)
        if hold is not None and not hold.classified:
            hold.tenant, hold.fallback, hold.classified = tenant, fallback, True
            self._settle()

    def discard(self, holder_id: str) -> None:
        """The hold played no music (a conference, nobody else): not a caller waiting."""
        if holder_id in self.open:
            self._close(holder_id)

    def forget_gone(self, live: Collection[str]) -> None:
        """After a reconnection (``live``: the channels Asterisk has now): stop following the holds
        whose holder, or every held party, went away while the events were lost — when they
        ended is unknown, so they are not counted, and without this they would be followed for
        ever (nothing more is ever said of a channel that is gone)."""
        for holder_id, hold in list(self.open.items()):
            if holder_id not in live or not any(held in live for held in hold.held):
                self._close(holder_id)

    def _close(self, holder_id: str) -> TalliedHold:
        """Stop following a hold in progress."""
        hold = self.open.pop(holder_id)
        for held in hold.held:
            holders = self.held_by.get(held, set())
            holders.discard(holder_id)
            if not holders:
                self.held_by.pop(held, None)
        return hold

    def take(self) -> list[tuple[str, HoldDay]]:
        """The figures counted since the last take (emptied)."""
        self._settle()
        rows = [(tenant, figures) for (tenant, _), figures in self.counted.items()]
        self.counted = {}
        return rows

    def _end(self, hold: TalliedHold, at: datetime, *, hung_up: bool) -> None:
        hold.seconds = max(0.0, (at - hold.started).total_seconds())
        hold.hung_up, hold.ended_at = hung_up, time.monotonic()
        self.ended.append(hold)
        self._settle()

    def _settle(self) -> None:
        """Count the ended holds whose tenant is known; drop those waiting too long."""
        waiting = []
        for hold in self.ended:
            if hold.classified and hold.tenant is not None and hold.seconds is not None:
                key = (hold.tenant, day_of(hold.started))
                figures = self.counted.setdefault(key, HoldDay(key[1]))
                figures.count(hold.seconds, hung_up=hold.hung_up, fallback=hold.fallback)
            elif not hold.classified and time.monotonic() - hold.ended_at < UNCLASSIFIED_S:
                waiting.append(hold)
        self.ended = waiting


class NoTally(HoldTally):
    """Hold statistics turned off (``hold_stats = false``): nothing followed, nothing counted."""

    def observe(self, event: Event, others: Sequence[str]) -> None:
        """Nothing."""

    def classify(self, holder_id: str, tenant: str | None, *, fallback: bool) -> None:
        """Nothing."""


class StatsWriter:
    """Writes a :class:`HoldTally`'s figures every ``interval`` seconds (one transaction), and what
    is left at :meth:`close`; drops days older than ``retention_days`` once an hour. The catalog is
    opened (``open_store``) at the first write, so a node whose catalog cannot be written (a
    read-only disk, the database down) still starts and serves holds."""

    def __init__(
        self,
        tally: HoldTally,
        open_store: Callable[[], HoldStatistics],
        retention_days: int,
        run_blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread,
        interval: float = 1.0,
    ) -> None:
        self.tally, self.open_store = tally, open_store
        self.retention_days, self.run_blocking, self.interval = retention_days, run_blocking, interval
        self.unwritten: dict[tuple[str, date], HoldDay] = {}
        self._store: HoldStatistics | None = None
        self._pruned_at: float | None = None
        self._failing = False

    def _write(self, rows: list[tuple[str, HoldDay]], prune: bool) -> None:
        """(blocking) One write, and the hourly pruning."""
        if self._store is None:
            self._store = self.open_store()
        if rows:
            self._store.add_hold_days(rows)
        if prune:
            self._store.drop_hold_days_before(datetime.now(UTC).date() - timedelta(days=self.retention_days - 1))

    async def run(self) -> None:
        """Write every ``interval`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what was counted (and what an earlier failed write kept)."""
        for tenant, figures in self.tally.take():
            self.unwritten.setdefault((tenant, figures.day), HoldDay(figures.day)).add(figures)
        rows = [(tenant, figures) for (tenant, _), figures in self.unwritten.items()]
        prune = self._pruned_at is None or time.monotonic() - self._pruned_at >= 3600
        try:
            if rows or prune:
                await self.run_blocking(self._write, rows, prune)
            if prune:
                self._pruned_at = time.monotonic()
        except OomaMohError as exc:
            metrics.HOLD_STATS_WRITES.labels("failed").inc()
            if not self._failing:
                log.info("hold statistics kept in memory until the catalog answers: %s", printable(exc))
            self._failing = True
        else:
            if rows:
                metrics.HOLD_STATS_WRITES.labels("ok").inc()
            if self._failing:
                log.info("hold statistics written again")
            self._failing = False
            self.unwritten = {}
        metrics.HOLD_STATS_UNWRITTEN.set(len(self.unwritten))

    async def close(self) -> None:
        """The last write, at SIGTERM."""
        await self.flush()
        if self.unwritten:
            log.error("hold statistics of %d tenant-days lost at exit: the catalog did not answer", len(self.unwritten))
        if self._store is not None:
            await self.run_blocking(self._store.close)
