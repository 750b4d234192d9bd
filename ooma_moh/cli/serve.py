"""The long-running processes: ``serve agi``, ``serve ari``, ``serve http`` and ``agent``, with their
logging and supervision."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import click

from ..app import hold_resolver, open_catalog, open_stats_catalog
from ..config import Settings
from .base import handles_errors, main


@main.group()
def serve() -> None:
    """Long-running services: the FastAGI server, the ARI hold handler and the HTTP API."""


def setup_logging(log_format: str = "text") -> None:
    """INFO logging to stderr for long-running processes, as text or JSON lines (``log_format``);
    every line, tracebacks included, without a credential's secret (:mod:`.logsafe`)."""
    import logging

    from ..logsafe import formatter

    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # boto3 says at INFO which credential source it found, once per client (with object storage,
    # before a listener is even opened): not worth a line; its warnings and errors still show
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)


def run_service(coro: Any, settings: Settings) -> None:
    """Run a service coroutine with INFO logging until it returns or is interrupted; under
    systemd with ``WatchdogSec=``, the event loop itself pings the watchdog (a stuck loop is
    killed and restarted)."""
    import asyncio

    from .. import systemd

    async def supervised() -> None:
        pings = asyncio.create_task(systemd.watchdog(), name="watchdog")
        try:
            await coro
        finally:
            pings.cancel()
            await asyncio.gather(pings, return_exceptions=True)

    setup_logging(settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(supervised())


def service_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--metrics-listen``, ``--log-format`` and ``--json`` of the long-running commands; the
    command receives ``metrics_listen`` and ``log_format`` (``--json`` folded into it)."""

    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, log_format: str | None, **kwargs: Any) -> Any:
        if as_json and log_format == "text":
            raise click.UsageError("--json means --log-format json: give one or the other")
        return func(*args, log_format="json" if as_json else log_format, **kwargs)

    command = click.option(
        "--json", "as_json", is_flag=True, help="Log lines as JSON objects (the same as --log-format json)."
    )(wrapper)
    command = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        help="Log lines as text or one JSON object per line (or OOMA_MOH_LOG_FORMAT).",
    )(command)
    return click.option(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Serve /metrics, /healthz and /readyz there (or OOMA_MOH_METRICS_LISTEN; default off).",
    )(command)


def with_options(settings: Settings, **fields: str | None) -> Settings:
    """``settings`` with the flags that were given."""
    given: dict[str, Any] = {name: value for name, value in fields.items() if value}
    return dataclasses.replace(settings, **given) if given else settings


@serve.command("agi")
@click.option("--listen", help="HOST:PORT to listen on (or OOMA_MOH_AGI_LISTEN; default 127.0.0.1:4573).")
@service_options
@click.pass_context
@handles_errors
def serve_agi(ctx: click.Context, listen: str | None, metrics_listen: str | None, log_format: str | None) -> None:
    """FastAGI server: AGI(agi://HOST:PORT/moh[?tenant=X]) sets the tenant's class on the channel."""
    from ..agi.server import run_fastagi

    settings = with_options(ctx.obj, agi_listen=listen, metrics_listen=metrics_listen, log_format=log_format)
    run_service(run_fastagi(settings, hold_resolver(settings, remember=True)), settings)


@serve.command("ari")
@click.option("--app", help="Stasis application name (or OOMA_MOH_ARI_APP; default ooma-moh).")
@service_options
@click.pass_context
@handles_errors
def serve_ari(ctx: click.Context, app: str | None, metrics_listen: str | None, log_format: str | None) -> None:
    """ARI hold handler: held callers hear the holder's tenant music (docs/ari.md)."""
    from ..ari.service import run_hold_handler

    settings = with_options(ctx.obj, ari_app=app, metrics_listen=metrics_listen, log_format=log_format)
    run_service(
        run_hold_handler(settings, hold_resolver(settings, remember=True), lambda: open_stats_catalog(settings)),
        settings,
    )


@serve.command("http")
@click.option("--listen", help="HOST:PORT to listen on (or OOMA_MOH_HTTP_LISTEN; default 127.0.0.1:8480).")
@service_options
@click.pass_context
@handles_errors
def serve_http(ctx: click.Context, listen: str | None, metrics_listen: str | None, log_format: str | None) -> None:
    """The tenant admin HTTP API (docs/http.md); changes go live without `sync`. /metrics,
    /healthz and /readyz are served on its port too."""
    from ..http.server import run_http

    settings = with_options(ctx.obj, http_listen=listen, metrics_listen=metrics_listen, log_format=log_format)
    open_catalog(settings, writable=False).close()  # refuse a home without a catalog at once
    run_service(run_http(settings), settings)


@main.command()
@click.option("--node-id", help="This node's name (default OOMA_MOH_NODE_ID, else the host name).")
@service_options
@click.pass_context
@handles_errors
def agent(ctx: click.Context, node_id: str | None, metrics_listen: str | None, log_format: str | None) -> None:
    """Keep this Asterisk node's classes equal to the shared catalog (docs/cluster.md)."""
    from ..agent import default_node_id, run_agent

    settings = with_options(ctx.obj, metrics_listen=metrics_listen, log_format=log_format)
    setup_logging(settings.log_format)
    run_agent(settings, node_id or settings.node_id or default_node_id())
