"""The ``ooma-moh`` group and what every command shares: settings, errors as one line, ``--json``."""

from __future__ import annotations

import functools
import getpass
import json
import signal
from collections.abc import Callable
from typing import Any

import click

from ..app import build_service
from ..config import load_settings
from ..errors import OomaMohError
from ..service import MohService


def emit(as_json: bool, data: Any, text: str) -> None:
    """Print ``data`` as JSON or ``text``."""
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into a one-line message and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OomaMohError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
#: who accepted the rights disclaimer (``upload``, ``restore``)
by_option = click.option(
    "--by",
    "accepted_by",
    default=getpass.getuser,
    show_default="the Unix user",
    help="Who accepted the disclaimer: printable text, 1-128 characters.",
)


@click.group()
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="TOML configuration file (or OOMA_MOH_CONFIG)."
)
@click.option("--home", type=click.Path(file_okay=False), help="Data directory (or OOMA_MOH_HOME).")
@click.version_option(package_name="ooma-moh")
@click.pass_context
@handles_errors
def main(ctx: click.Context, config_file: str | None, home: str | None) -> None:
    """Per-tenant music on hold for Asterisk."""
    # SIGTERM unwinds like Ctrl-C: scratch files are removed and ffmpeg is killed on the way out.
    signal.signal(signal.SIGTERM, _terminated)
    ctx.obj = load_settings(config_file, overrides={"home": home})


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def service_of(ctx: click.Context, *, writable: bool = True) -> MohService:
    """The service for this invocation, built once; ``writable=False`` for commands that only
    read (they then create nothing and work on a read-only or full disk)."""
    if "service" not in ctx.meta:
        ctx.meta["service"] = built = build_service(ctx.obj, writable=writable)
        ctx.call_on_close(built.catalog.close)  # its connection, once the command is done
    service: MohService = ctx.meta["service"]
    return service


def wants_json(ctx: click.Context, as_json: bool) -> bool:
    """``--json`` given to this subcommand or to its group (``endpoints --json set ...``)."""
    return as_json or bool(ctx.parent is not None and ctx.parent.params.get("as_json"))
