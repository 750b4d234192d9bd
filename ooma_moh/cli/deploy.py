"""The files ooma-moh ships for others to read, written out from the installed package:
``asterisk-conf`` (the Asterisk configuration, :mod:`ooma_moh.asterisk_conf`) and ``deploy-files``
(units, environment template, alerting rules, dashboard: :mod:`ooma_moh.deploy`). Both write all
or nothing and never over an edited file without ``--force`` (:mod:`ooma_moh.shipped`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ..asterisk_conf import write_samples
from ..deploy import write_deploy_files
from .base import emit, handles_errors, json_option, main

Writer = Callable[[Path, bool], list[Path]]


def shipped_files_command(name: str, dest_help: str) -> Callable[[Writer], click.Command]:
    """``name --dest DIR [--force] [--json]``: the decorated writer's files into DIR (its
    docstring is the command's help)."""

    def register(write: Writer) -> click.Command:
        @main.command(name, help=write.__doc__)
        @click.option("--dest", required=True, type=click.Path(file_okay=False), help=dest_help)
        @click.option("--force", is_flag=True, help="Replace files that exist already.")
        @json_option
        @handles_errors
        def command(dest: str, force: bool, as_json: bool) -> None:
            written = write(Path(dest), force)
            said = "\n".join(f"wrote {p}" for p in written)
            emit(as_json, {"dest": dest, "written": [str(p) for p in written]}, said)

        return command

    return register


@shipped_files_command(
    "asterisk-conf", "Directory to write into (created if missing); merge from there into /etc/asterisk."
)
def write_asterisk_conf(dest: Path, force: bool) -> list[Path]:
    """Write the Asterisk configuration ooma-moh needs (docs/asterisk.md) into DEST."""
    return write_samples(dest, force=force)


@shipped_files_command("deploy-files", "Directory to write into (created if missing): systemd/, prometheus/, grafana/.")
def write_deploy(dest: Path, force: bool) -> list[Path]:
    """Write the systemd units, sysusers.d/tmpfiles.d files, environment file template, drop-in,
    Prometheus alerting rules and Grafana dashboard (docs/operations.md, docs/monitoring.md) into DEST."""
    return write_deploy_files(dest, force=force)
