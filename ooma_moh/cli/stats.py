"""Hold statistics for the operator: ``stats TENANT`` (a tenant's days) and ``stats --all`` (one
line per tenant). Figures and days as the API's (docs/http.md, "Hold statistics"): UTC days,
median and 90th percentile from fixed buckets."""

from __future__ import annotations

import contextlib
from datetime import date
from typing import Any

import click

from ..app import open_catalog
from ..holdstats import MAX_DAYS, HoldDay, day_range, summary
from ..model import validate_tenant_id
from .base import emit, handles_errors, json_option, main

#: the columns of both tables after the first: (heading, width)
COLUMNS = (("holds", 7), ("on hold", 10), ("median s", 10), ("p90 s", 9), ("hung up", 9), ("fallback", 10))


def clock(seconds: float) -> str:
    """A length as ``H:MM:SS`` (``M:SS`` under an hour)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _row(first: str, width: int, figures: dict[str, Any]) -> str:
    cells = (
        figures["holds"],
        clock(figures["seconds"]),
        f"{figures['median_s']:.1f}",
        f"{figures['p90_s']:.1f}",
        figures["hung_up"],
        figures["fallback"],
    )
    return f"{first:<{width}}" + "".join(f"{cell:>{w}}" for cell, (_, w) in zip(cells, COLUMNS, strict=True))


def _heading(first: str, width: int) -> str:
    return f"{first:<{width}}" + "".join(f"{name:>{w}}" for name, w in COLUMNS)


def _span(first: date, last: date) -> str:
    days = (last - first).days + 1
    return f"the last {days} day{'s' if days > 1 else ''} (UTC, {first.isoformat()} to {last.isoformat()})"


def tenant_text(tenant: str, figures: dict[str, Any], first: date, last: date) -> str:
    """:func:`~ooma_moh.holdstats.summary`'s figures for people: the days with holds, then the total."""
    if not figures["total"]["holds"]:
        return f"no holds for {tenant} in {_span(first, last)}"
    lines = [f"holds of {tenant} in {_span(first, last)}", _heading("date", 12)]
    lines += [_row(day["date"], 12, day) for day in figures["days"] if day["holds"]]
    lines.append(_row("total", 12, figures["total"]))
    return "\n".join(lines)


def totals_dict(totals: dict[str, HoldDay], first: date, last: date) -> dict[str, Any]:
    """Every tenant's figures over the window, for ``--json``: sorted by tenant."""
    return {
        "first": first.isoformat(),
        "last": last.isoformat(),
        "tenants": [{"tenant": tenant, **totals[tenant].figures()} for tenant in sorted(totals)],
    }


def totals_text(data: dict[str, Any]) -> str:
    """:func:`totals_dict` for people: one line per tenant with holds."""
    first, last = date.fromisoformat(data["first"]), date.fromisoformat(data["last"])
    if not data["tenants"]:
        return f"no holds in {_span(first, last)}"
    width = max(24, *(len(t["tenant"]) + 2 for t in data["tenants"]))
    lines = [f"holds in {_span(first, last)}", _heading("tenant", width)]
    lines += [_row(t["tenant"], width, t) for t in data["tenants"]]
    return "\n".join(lines)


@main.command()
@click.argument("tenant", required=False)
@click.option("--all", "all_", is_flag=True, help="One line per tenant with holds, instead of one tenant's days.")
@click.option(
    "--days",
    type=click.IntRange(1, MAX_DAYS),
    default=30,
    show_default=True,
    help="How many UTC days, today included.",
)
@json_option
@click.pass_context
@handles_errors
def stats(ctx: click.Context, tenant: str | None, all_: bool, days: int, as_json: bool) -> None:
    """Hold statistics: TENANT's holds per day (those with holds, and the total), or with --all
    every tenant's total."""
    if bool(tenant) == all_:
        raise click.UsageError("give TENANT or --all")
    if tenant:
        validate_tenant_id(tenant)  # argument errors before data-home errors
    first, last = day_range(days)
    with contextlib.closing(open_catalog(ctx.obj, writable=False)) as catalog:
        if tenant:
            figures = summary(catalog.hold_days(tenant, first, last), first, last)
            emit(as_json, figures, tenant_text(tenant, figures, first, last))
        else:
            data = totals_dict(catalog.hold_totals(first, last), first, last)
            emit(as_json, data, totals_text(data))
