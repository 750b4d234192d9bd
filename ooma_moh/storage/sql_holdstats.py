"""Hold statistics in the two SQL catalogs (SQLite, PostgreSQL): per tenant and UTC day, figures
that are only ever added to (rules in :mod:`ooma_moh.holdstats`).

Two tables: ``hold_days`` (holds, milliseconds on hold, hung up, fallbacks per tenant and day)
and ``hold_buckets`` (holds per length bucket per tenant and day, only the non-zero ones). Every
write adds with ``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n``, so writers on several
nodes never read-modify-write and never lose each other's counts; a write's rows go in key order,
so two writers' transactions cannot deadlock on PostgreSQL. Days are ``YYYY-MM-DD`` text in both
back ends (they sort as dates).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from ..holdstats import HoldDay
from .sql_history import Row, SqlBackEnd

_ADD_DAY = (
    "INSERT INTO hold_days (tenant_id, day, holds, milliseconds, hung_up, fallback) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, day) DO UPDATE SET holds = hold_days.holds + excluded.holds,"
    " milliseconds = hold_days.milliseconds + excluded.milliseconds,"
    " hung_up = hold_days.hung_up + excluded.hung_up, fallback = hold_days.fallback + excluded.fallback"
)
_ADD_BUCKET = (
    "INSERT INTO hold_buckets (tenant_id, day, bucket, holds) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, day, bucket) DO UPDATE SET holds = hold_buckets.holds + excluded.holds"
)


class SqlHoldStats(SqlBackEnd):
    """Mixin of :class:`~.sqlite.SqliteCatalog` and :class:`~.postgres.PostgresCatalog`: the
    :class:`~.base.HoldStatistics` role."""

    def add_hold_days(self, rows: Sequence[tuple[str, HoldDay]]) -> None:
        if not rows:
            return
        with self._write() as db:
            for tenant_id, d in sorted(rows, key=lambda row: (row[0], row[1].day)):
                day = d.day.isoformat()
                self._exec(db, _ADD_DAY, (tenant_id, day, d.holds, round(d.seconds * 1000), d.hung_up, d.fallback))
                for bucket, holds in sorted(d.buckets.items()):
                    self._exec(db, _ADD_BUCKET, (tenant_id, day, bucket, holds))

    #: the back end's aggregate joining text with a separator (SQLite ``group_concat``)
    _JOIN = "group_concat"

    def hold_days(self, tenant_id: str, first: date, last: date) -> list[HoldDay]:
        # one row a day, its buckets as "index,holds,index,holds…": 400 rows to read, not 400 x 75
        rows = self._select(
            "SELECT d.day, d.holds, d.milliseconds, d.hung_up, d.fallback,"
            f" (SELECT {self._JOIN}(b.bucket || ',' || b.holds, ',') FROM hold_buckets b"
            "  WHERE b.tenant_id = d.tenant_id AND b.day = d.day) AS buckets"
            " FROM hold_days d WHERE d.tenant_id = ? AND d.day >= ? AND d.day <= ? ORDER BY d.day",
            (tenant_id, first.isoformat(), last.isoformat()),
        )
        days = []
        for row in rows:
            figures = _figures(row, date.fromisoformat(row["day"]))
            if row["buckets"]:
                numbers = list(map(int, row["buckets"].split(",")))
                figures.buckets = dict(zip(numbers[::2], numbers[1::2], strict=True))
            days.append(figures)
        return days

    def hold_totals(self, first: date, last: date) -> dict[str, HoldDay]:
        span = (first.isoformat(), last.isoformat())
        totals = {
            row["tenant_id"]: _figures(row, first)
            for row in self._select(
                "SELECT tenant_id, sum(holds) AS holds, sum(milliseconds) AS milliseconds, sum(hung_up) AS hung_up,"
                " sum(fallback) AS fallback FROM hold_days WHERE day >= ? AND day <= ? GROUP BY tenant_id",
                span,
            )
        }
        for row in self._select(
            "SELECT tenant_id, bucket, sum(holds) AS holds FROM hold_buckets WHERE day >= ? AND day <= ?"
            " GROUP BY tenant_id, bucket",
            span,
        ):
            if (figures := totals.get(row["tenant_id"])) is not None:
                figures.buckets[int(row["bucket"])] = int(row["holds"])
        return totals

    def drop_hold_days_before(self, day: date) -> int:
        with self._write() as db:
            (count,) = self._exec(db, "SELECT count(*) AS n FROM hold_days WHERE day < ?", (day.isoformat(),))
            self._exec(db, "DELETE FROM hold_buckets WHERE day < ?", (day.isoformat(),))
            self._exec(db, "DELETE FROM hold_days WHERE day < ?", (day.isoformat(),))
            return int(count["n"])


def _figures(row: Row, day: date) -> HoldDay:
    return HoldDay(day, int(row["holds"]), int(row["milliseconds"]) / 1000, int(row["hung_up"]), int(row["fallback"]))
