"""The shared catalog's schema (``db upgrade``) and the cluster's nodes (``nodes``, ``nodes remove``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..app import create_catalog
from ..config import Settings
from ..nodestate import grace_s
from .base import emit, handles_errors, json_option, main, wants_json

if TYPE_CHECKING:
    from ..storage.nodes import NodeRegistry, NodeStatus


@main.group()
def db() -> None:
    """The catalog's schema."""


@db.command("upgrade")
@click.option("--start-over", is_flag=True, help="Accept an empty catalog next to a blob store that holds files.")
@json_option
@click.pass_context
@handles_errors
def db_upgrade(ctx: click.Context, start_over: bool, as_json: bool) -> None:
    """Create the catalog's schema or bring it to this version (idempotent; several hosts may run
    it at once). PostgreSQL: the versioned migrations; SQLite: the tables of the home's catalog."""
    from ..storage.postgres_db import LATEST

    settings: Settings = ctx.obj
    applied = create_catalog(settings, start_over=start_over)
    where = "PostgreSQL catalog" if settings.database_url else f"SQLite catalog {settings.catalog_path}"
    emit(
        as_json,
        {
            "backend": "postgresql" if settings.database_url else "sqlite",
            "applied": applied,
            "version": LATEST if settings.database_url else None,
        },
        f"{where}: " + (f"applied {', '.join(map(str, applied))}" if applied else "already current"),
    )


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
@handles_errors
def nodes(ctx: click.Context, as_json: bool) -> None:
    """The cluster's nodes: state (live, behind, down, damaged), heartbeat, last sync, last error,
    how far behind; `nodes remove NODE` retires one."""
    if ctx.invoked_subcommand is not None:
        return
    from ..service import utcnow

    with _registry(ctx.obj) as registry:
        statuses = registry.statuses(ctx.obj.class_prefix, utcnow())
    rows = [_row(s) for s in statuses]
    emit(as_json, rows, "\n".join(_line(r) for r in rows) or "no nodes have reported yet")


@nodes.command("remove")
@click.argument("node")
@click.option("--force", is_flag=True, help="Remove it even though its agent is live (it registers again).")
@json_option
@click.pass_context
@handles_errors
def nodes_remove(ctx: click.Context, node: str, force: bool, as_json: bool) -> None:
    """Retire NODE: it is no longer counted in "live on N of M". Refused while its agent is live
    (heartbeat fresh) unless --force. Idempotent."""
    with _registry(ctx.obj) as registry:
        removed = registry.remove(node, force=force)
    text = f"node {node} removed: no longer counted" if removed else f"no node {node}: nothing to remove"
    emit(wants_json(ctx, as_json), {"node": node, "removed": removed}, text)


@contextlib.contextmanager
def _registry(settings: Settings) -> Iterator[NodeRegistry]:
    from ..storage.nodes import NodeRegistry

    if not settings.database_url:
        raise click.ClickException("nodes are known only with the shared catalog: set OOMA_MOH_DATABASE_URL")
    registry = NodeRegistry(settings.database_url)
    try:
        yield registry
    finally:
        registry.close()


def _when(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _row(s: NodeStatus) -> dict[str, Any]:
    """One node for ``nodes --json``."""
    return {
        "node": s.node_id,
        "state": s.state.value,
        "heartbeat_age_s": s.heartbeat_age_s,
        "heartbeat_s": s.heartbeat_s,
        "holder": s.holder,
        "last_seen": s.last_seen.isoformat(),
        "last_success": _when(s.last_success),
        "classes": s.classes,
        "behind": s.behind,
        "lag_s": s.lag_s,
        "last_error": s.last_error,
        "damage": s.damage,
        "damage_at": _when(s.damage_at),
        "repaired": s.repaired,
        "repaired_at": _when(s.repaired_at),
    }


def _line(r: dict[str, Any]) -> str:
    """One node for ``nodes``: a down node never reads "up to date" (nobody knows)."""
    age, interval = r["heartbeat_age_s"], r["heartbeat_s"]
    if age is None or interval is None:
        beat = "no heartbeat (agent stopped)"
    elif r["state"] == "down":
        beat = f"silent {age:.1f} s (down after {grace_s(interval):g} s)"
    else:
        beat = f"heartbeat {age:.1f} s ago"
    if r["behind"]:
        behind = f"behind {r['behind']}" + (f" lag {r['lag_s']:.1f} s" if r["lag_s"] is not None else "")
    else:
        behind = "behind 0" if r["state"] == "down" else "up to date"
    return (
        f"{r['node']:<24} {r['state']:<8} {beat}  classes {r['classes']}  {behind}"
        f"  last sync {r['last_success'] or 'never'}"
        + (f"  DAMAGED {r['damage']}" if r["damage"] else "")
        + (f"  repaired {r['repaired']} at {r['repaired_at']}" if r["repaired"] else "")
        + (f"  ERROR {r['last_error']}" if r["last_error"] else "")
    )
