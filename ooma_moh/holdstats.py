"""Hold statistics: per tenant and per day, what callers on hold went through. Pure rules, no I/O.

The rules, in order:

1. A *hold* is counted for the holder's tenant — on a dialplan bridge whose holder has none, for
   the tenant whose class the dialplan's route gave the held party (``tenant-<id>``); a hold with
   neither, or whose tenant is not a valid tenant id (a dialplan's ``OOMA_MOH_TENANT`` is any
   text), is not counted — on the UTC day it started, when it ends: the holder unholds, leaves
   the bridge or hangs up, or the held party hangs up (then it is also ``hung_up``). Its length
   is the time between Asterisk's ``ChannelHold`` and the event that ended it (Asterisk's own
   timestamps).
2. A hold is a ``fallback`` when its held party heard ``default`` — or, on a dialplan bridge, any
   class other than the tenant's — although the tenant's music was not ``default`` by choice:
   :func:`is_fallback`. A tenant without a file, or on the default music, is never a fallback.
3. Lengths are counted in the fixed buckets :data:`BUCKETS_S` (upper bounds, seconds), so that
   days, nodes and handlers merge by adding counts; the median and 90th percentile are read from
   the buckets by linear interpolation inside the bucket (:func:`quantile`): exact to the bucket's
   width (1 s up to 30 s, 5 s up to 2 min, 30 s up to 10 min, 5 min up to 1 h).
4. A day's figures are only ever added to (a write adds counts); days older than
   ``stats_retention_days`` are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from .model import TENANT_ID_PATTERN

#: the buckets' upper bounds in seconds; a hold longer than the last is in a last, open bucket
BUCKETS_S: tuple[float, ...] = (
    *range(1, 31),
    *range(35, 121, 5),
    *range(150, 601, 30),
    *range(900, 3601, 300),
)
#: number of buckets, the open one included
BUCKET_COUNT = len(BUCKETS_S) + 1
#: how long the open bucket is taken to be, for interpolation only
OPEN_BUCKET_S = 3600.0
#: the resolver's reasons for ``default`` that mean the tenant has no music of its own (rule 2)
NOT_A_FALLBACK = frozenset(
    {"unknown tenant", "tenant on default music", "no tenant on the holder", "invalid tenant id"}
)
#: the keys of one day's figures, in the API's order
KEYS = ("holds", "seconds", "median_s", "p90_s", "hung_up", "fallback")
#: how many days a reader may ask for
MAX_DAYS = 400


def bucket_of(seconds: float) -> int:
    """The index of the bucket a hold of ``seconds`` falls in."""
    low, high = 0, len(BUCKETS_S)
    while low < high:  # first bound >= seconds
        mid = (low + high) // 2
        if BUCKETS_S[mid] < seconds:
            low = mid + 1
        else:
            high = mid
    return low


def bucket_bounds(index: int) -> tuple[float, float]:
    """The (lower, upper) seconds of a bucket."""
    lower = 0.0 if index == 0 else float(BUCKETS_S[index - 1])
    upper = float(BUCKETS_S[index]) if index < len(BUCKETS_S) else lower + OPEN_BUCKET_S
    return lower, upper


def quantile(buckets: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of the lengths counted in ``buckets`` (index -> holds), by rule 3;
    None when nothing is counted."""
    return quantiles(buckets, (q,))[0]


def quantiles(buckets: Mapping[int, int], qs: tuple[float, ...]) -> list[float | None]:
    """:func:`quantile` for each of ``qs`` (ascending), in one pass over the buckets."""
    total = sum(buckets.values())
    if total == 0:
        return [None] * len(qs)
    answers: list[float | None] = []
    seen = 0
    ranks = iter(q * total for q in qs)
    rank = next(ranks)
    for index in sorted(buckets):
        count = buckets[index]
        while count and seen + count >= rank:
            lower, upper = bucket_bounds(index)
            answers.append(round(lower + (upper - lower) * (rank - seen) / count, 1))
            if (rank := next(ranks, -1.0)) < 0:
                return answers
        seen += count
    return answers  # pragma: no cover - every rank <= total stops above


def is_fallback(heard: str, expected: str, reason: str | None) -> bool:
    """Rule 2. ``heard``: the class the held party was given; ``expected`` and ``reason``: the
    resolver's answer for the holder's tenant."""
    if reason in NOT_A_FALLBACK:
        return False
    if reason is not None:  # the catalog failed and this node does not publish the tenant
        return True
    return heard != expected


def tenant_of_class(moh_class: str, prefix: str) -> str | None:
    """The tenant whose class ``moh_class`` is (``tenant-acme`` → ``acme``), else None — also
    for a class a dialplan made up that holds no valid tenant id (``tenant-a b``)."""
    tenant = moh_class.removeprefix(prefix)
    return tenant if tenant != moh_class and is_tenant_id(tenant) else None


def is_tenant_id(value: str | None) -> bool:
    """Whether ``value`` is a valid tenant id (:func:`ooma_moh.model.validate_tenant_id`): only
    those are counted and stored (rule 1)."""
    return value is not None and TENANT_ID_PATTERN.fullmatch(value) is not None


def day_of(moment: datetime) -> date:
    """The UTC day a hold that started at ``moment`` counts for."""
    return moment.astimezone(UTC).date()


@dataclass
class HoldDay:
    """One tenant's holds on one day (or summed over days): what the catalog stores."""

    day: date
    holds: int = 0
    seconds: float = 0.0
    hung_up: int = 0
    fallback: int = 0
    #: bucket index -> holds (only non-zero buckets)
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, other: HoldDay) -> None:
        """Add another day's (or node's) figures to these."""
        self.holds += other.holds
        self.seconds += other.seconds
        self.hung_up += other.hung_up
        self.fallback += other.fallback
        mine = self.buckets
        for index, count in other.buckets.items():
            mine[index] = mine.get(index, 0) + count

    def count(self, seconds: float, *, hung_up: bool, fallback: bool) -> None:
        """Count one hold of ``seconds``."""
        self.add(HoldDay(self.day, 1, seconds, int(hung_up), int(fallback), {bucket_of(seconds): 1}))

    def figures(self) -> dict[str, object]:
        """The API's figures (rule 3 for the percentiles; 0 when there was no hold)."""
        median, p90 = quantiles(self.buckets, (0.5, 0.9))
        return {
            "holds": self.holds,
            "seconds": round(self.seconds, 1),
            "median_s": median or 0.0,
            "p90_s": p90 or 0.0,
            "hung_up": self.hung_up,
            "fallback": self.fallback,
        }


def day_range(days: int, today: date | None = None) -> tuple[date, date]:
    """The first and last day of the last ``days`` days, today (UTC) included."""
    last = today or datetime.now(UTC).date()
    return last - timedelta(days=days - 1), last


def summary(stored: Iterable[HoldDay], first: date, last: date) -> dict[str, object]:
    """``{"days": [...every day from first to last, zeros included...], "total": {...}}``."""
    by_day = {d.day: d for d in stored}
    total = HoldDay(first)
    days = []
    day = first
    while day <= last:
        figures = by_day.get(day, HoldDay(day))
        total.add(figures)
        days.append({"date": day.isoformat(), **figures.figures()})
        day += timedelta(days=1)
    return {"days": days, "total": total.figures()}
