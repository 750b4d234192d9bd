"""The ``ooma-moh doctor`` command: every check run in the order printed, each guarded so that a
check that breaks becomes a failed finding, and the findings printed as lines or JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import click

from ..config import Settings
from ..errors import OomaMohError
from .asterisk import check_asterisk
from .cluster import check_cluster
from .findings import FAIL, Finding, exit_status, one_line
from .local import check_ffmpeg, check_storage
from .permissions import asterisk_user, check_moh_dir, check_realtime_db


def guarded(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """Run one check; an unexpected exception becomes a failed finding instead of a traceback."""
    try:
        return check()
    except Exception as exc:  # a doctor reports; it does not crash on what it examines
        return [
            Finding(
                name,
                FAIL,
                f"the check itself failed: {type(exc).__name__}: {one_line(str(exc))}",
                "report this as a bug of ooma-moh, with this line",
            )
        ]


def run_checks(settings: Settings, *, call: bool = False) -> list[Finding]:
    """Every check, in the order they are printed."""
    findings = guarded("ffmpeg", lambda: check_ffmpeg(settings))
    findings += guarded("catalog", lambda: check_storage(settings))
    if settings.database_url:  # a cluster node: its agent publishes
        findings += guarded("agent", lambda: check_cluster(settings))
    facts: list[dict[str, Any] | None] = [None]

    def run_asterisk() -> list[Finding]:
        facts[0], found = asyncio.run(check_asterisk(settings, call))
        return found

    asterisk_findings = guarded("ari", run_asterisk)
    by_name = {f.check: f for f in asterisk_findings}
    findings += [f for f in asterisk_findings if f.check in ("ari", "modules")]
    who = asterisk_user(settings, facts[0])
    findings += guarded("moh-dir", lambda: check_moh_dir(settings, who))
    if settings.publish_mode == "realtime":
        findings += guarded("realtime-db", lambda: check_realtime_db(settings, who))
    findings += [by_name[name] for name in ("realtime-mapping", "call") if name in by_name]
    return findings


@click.command("doctor")
@click.option(
    "--call",
    is_flag=True,
    help="Also have Asterisk play a class to a probe channel and check the audio sample for sample.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def doctor_command(ctx: click.Context, call: bool, as_json: bool) -> None:
    """Check ffmpeg, the catalog and blobs, the MOH directory, and Asterisk (ARI, modules, realtime
    mapping); one line per finding with what to do. Exit 0 when nothing failed."""
    settings: Settings = ctx.obj
    try:
        findings = run_checks(settings, call=call)
    except OomaMohError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2, sort_keys=True))
    else:
        click.echo("\n".join(f.line() for f in findings))
    ctx.exit(exit_status(findings))
