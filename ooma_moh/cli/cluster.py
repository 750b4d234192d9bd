"""The shared catalog's schema (``db upgrade``) and the cluster's nodes (``nodes``)."""

from __future__ import annotations

import click

from ..app import create_catalog
from ..config import Settings
from .base import emit, handles_errors, json_option, main


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


@main.command()
@json_option
@click.pass_context
@handles_errors
def nodes(ctx: click.Context, as_json: bool) -> None:
    """The cluster's nodes: when each last synced, its last error, and how far behind it is."""
    from ..service import utcnow
    from ..storage.nodes import NodeRegistry

    settings: Settings = ctx.obj
    if not settings.database_url:
        raise click.ClickException("nodes are known only with the shared catalog: set OOMA_MOH_DATABASE_URL")
    registry = NodeRegistry(settings.database_url)
    try:
        statuses = registry.statuses(settings.class_prefix, utcnow())
    finally:
        registry.close()
    rows = [
        {
            "node": s.node_id,
            "last_seen": s.last_seen.isoformat(),
            "last_success": s.last_success.isoformat() if s.last_success else None,
            "classes": s.classes,
            "behind": s.behind,
            "lag_s": s.lag_s,
            "last_error": s.last_error,
        }
        for s in statuses
    ]
    emit(
        as_json,
        rows,
        "\n".join(
            f"{r['node']:<24} classes {r['classes']:<5} behind {r['behind']:<4}"
            + (f" lag {r['lag_s']:.1f} s" if r["lag_s"] is not None else " up to date")
            + f"  last sync {r['last_success'] or 'never'}"
            + (f"  ERROR {r['last_error']}" if r["last_error"] else "")
            for r in rows
        )
        or "no nodes have reported yet",
    )
