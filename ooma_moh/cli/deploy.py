"""``deploy-files``: the deployment files shipped in the package (:mod:`ooma_moh.deploy`), written
out from the installed package, as ``asterisk-conf`` does for the Asterisk configuration."""

from __future__ import annotations

from pathlib import Path

import click

from ..deploy import write_deploy_files
from .base import emit, handles_errors, json_option, main


@main.command("deploy-files")
@click.option(
    "--dest",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write into (created if missing): systemd/, prometheus/, grafana/.",
)
@click.option("--force", is_flag=True, help="Replace files that exist already.")
@json_option
@handles_errors
def write_deploy(dest: str, force: bool, as_json: bool) -> None:
    """Write the systemd units, sysusers.d/tmpfiles.d files, environment file template, drop-in,
    Prometheus alerting rules and Grafana dashboard (docs/operations.md, docs/monitoring.md) into DEST."""
    written = write_deploy_files(Path(dest), force=force)
    emit(as_json, {"dest": dest, "written": [str(p) for p in written]}, "\n".join(f"wrote {p}" for p in written))
