"""Tenants' music: ``init``, ``upload``, ``show``, ``list``, ``delete``, ``listen``, ``restore``,
``demo``, ``sync``, ``verify``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..app import build_service, build_syncer, create_catalog
from ..asterisk_cli import AsteriskCli
from ..beds import BED_LEVEL_RANGE, BEDS, DEFAULT_BED_LEVEL_DB
from ..errors import ReloadPending
from ..model import MohSetting, validate_tenant_id
from ..pcm import QUALITIES, as_wav
from ..sync import ClassesRefused, Syncer, SyncReport
from .base import by_option, emit, handles_errors, json_option, main, service_of
from .present import describe, report_dict, report_text, tenant_dict


@main.command()
@click.option(
    "--start-over",
    is_flag=True,
    help="Begin an empty catalog although the blob store holds files (they go to the trash).",
)
@json_option
@click.pass_context
@handles_errors
def init(ctx: click.Context, start_over: bool, as_json: bool) -> None:
    """Create the data home and its empty catalog (idempotent); with OOMA_MOH_DATABASE_URL, the
    catalog database's schema (as `db upgrade`)."""
    create_catalog(ctx.obj, start_over=start_over)
    build_service(ctx.obj, start_over=start_over).catalog.close()  # also reclaims dead uploads' scratch
    emit(as_json, {"home": str(ctx.obj.home)}, f"catalog ready in {ctx.obj.home}")


@main.command()
@click.argument("tenant")
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--accept-disclaimer", is_flag=True, help="Confirm the tenant holds the rights to this file.")
@by_option
@click.option("--name", "original_name", help="Original file name to record (default: FILE's name).")
@click.option(
    "--bed",
    type=click.Choice(BEDS),
    help="Put music under FILE (a voice): default = the platform's default music, current = TENANT's current file.",
)
@click.option(
    "--bed-level-db",
    type=click.FloatRange(*BED_LEVEL_RANGE),
    default=DEFAULT_BED_LEVEL_DB,
    show_default=True,
    help="With --bed: the music's level in the voice's pauses, relative to the voice (dB).",
)
@json_option
@click.pass_context
@handles_errors
def upload(
    ctx: click.Context,
    tenant: str,
    file: str,
    accept_disclaimer: bool,
    accepted_by: str,
    original_name: str | None,
    bed: str | None,
    bed_level_db: float,
    as_json: bool,
) -> None:
    """Make FILE the music TENANT's callers hear on hold (FILE may be - for stdin)."""
    validate_tenant_id(tenant)
    service = service_of(ctx)
    source = sys.stdin.buffer if file == "-" else Path(file)
    if bed is not None:
        result = service.upload_over_music(
            tenant,
            source,
            bed=bed,
            bed_level_db=bed_level_db,
            accept_disclaimer=accept_disclaimer,
            accepted_by=accepted_by,
            original_name=original_name,
        )
    else:
        result = service.upload(
            tenant, source, accept_disclaimer=accept_disclaimer, accepted_by=accepted_by, original_name=original_name
        )
    data = tenant_dict(result, ctx.obj.class_prefix)
    emit(as_json, data, describe(data))


@main.command()
@click.argument("tenant")
@json_option
@click.pass_context
@handles_errors
def show(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """Setting, file, disclaimer, renditions and class of TENANT."""
    validate_tenant_id(tenant)  # argument errors before data-home errors
    found = service_of(ctx, writable=False).show(tenant)
    data = tenant_dict(found, ctx.obj.class_prefix)
    if ctx.obj.database_url:  # a cluster: on how many nodes callers hear it
        from ..storage.nodes import NodeRegistry

        registry = NodeRegistry(ctx.obj.database_url)
        try:
            live, total = registry.live_on(
                ctx.obj.class_prefix + found.tenant_id, found.version if found.setting is MohSetting.FILE else None
            )
        finally:
            registry.close()
        data["nodes"] = {"live": live, "of": total}
    emit(as_json, data, describe(data))


@main.command("list")
@json_option
@click.pass_context
@handles_errors
def list_(ctx: click.Context, as_json: bool) -> None:
    """Every tenant the catalog knows."""
    tenants = [tenant_dict(t, ctx.obj.class_prefix) for t in service_of(ctx, writable=False).list()]
    text = (
        "\n".join(
            f"{t['tenant']:<24} {t['setting']:<8} {t['moh_class']:<30} {(t['file'] or {}).get('original_name', '')}"
            for t in tenants
        )
        or "no tenants"
    )
    emit(as_json, tenants, text)


@main.command()
@click.argument("tenant")
@json_option
@click.pass_context
@handles_errors
def delete(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """Remove TENANT's file: its callers hear the default music again."""
    validate_tenant_id(tenant)
    data = tenant_dict(service_of(ctx).delete(tenant), ctx.obj.class_prefix)
    emit(as_json, data, f"tenant {tenant} is on default music")


@main.command()
@click.argument("tenant")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True), help="WAV file to write."
)
@click.option(
    "--quality",
    type=click.Choice(sorted(QUALITIES)),
    default="wideband",
    show_default=True,
    help="phone: the 8 kHz μ-law rendition a G.711 caller gets, decoded; wideband: the 16 kHz one.",
)
@json_option
@click.pass_context
@handles_errors
def listen(ctx: click.Context, tenant: str, output: str, quality: str, as_json: bool) -> None:
    """Write what TENANT's callers hear as a WAV file."""
    validate_tenant_id(tenant)
    extension, rate, _ = QUALITIES[quality]
    wav = as_wav(service_of(ctx, writable=False).rendition_bytes(tenant, extension), quality)
    try:
        Path(output).write_bytes(wav)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    seconds = (len(wav) - 44) / (2 * rate)
    emit(
        as_json,
        {"tenant": tenant, "output": output, "seconds": seconds, "quality": quality, "rate": rate},
        f"wrote {output}: {seconds:.2f} s, {rate // 1000} kHz mono ({quality})",
    )


@main.command()
@click.argument("tenant")
@click.option("--accept-disclaimer", is_flag=True, help="Confirm the tenant holds the rights to the previous file.")
@by_option
@json_option
@click.pass_context
@handles_errors
def restore(ctx: click.Context, tenant: str, accept_disclaimer: bool, accepted_by: str, as_json: bool) -> None:
    """Make the file TENANT's last change replaced or removed current again."""
    validate_tenant_id(tenant)
    result = service_of(ctx).restore(tenant, accept_disclaimer=accept_disclaimer, accepted_by=accepted_by)
    data = tenant_dict(result, ctx.obj.class_prefix)
    emit(as_json, data, describe(data))


@main.command()
@click.option("--keep", type=click.Path(file_okay=False), help="Directory for the lab's files (kept afterwards).")
@handles_errors
def demo(keep: str | None) -> None:
    """The main job end to end: lab Asterisk, upload, sync, and a recorded caller who must hear it."""
    from ..lab.demo import run_demo  # only here: the runtime commands never import the lab

    if not run_demo(click.echo, Path(keep) if keep else None):
        raise click.ClickException("the demo caller did not hear the tenant's music")


def syncer_of(ctx: click.Context) -> Syncer:
    """The syncer for this invocation."""
    service = service_of(ctx)
    return build_syncer(ctx.obj, service)


@main.command()
@click.argument("tenants", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every tenant; also removes classes of tenants no longer on file.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@json_option
@click.pass_context
@handles_errors
def sync(ctx: click.Context, tenants: tuple[str, ...], all_: bool, dry_run: bool, as_json: bool) -> None:
    """Publish tenants' classes to Asterisk (realtime rows or static include + reload)."""
    if bool(tenants) == all_:
        raise click.UsageError("name one or more TENANTS, or --all")
    syncer = syncer_of(ctx)
    targets = None if all_ else list(tenants)
    try:
        if all_ and not as_json and not dry_run and sys.stdout.isatty():
            total = len(syncer.run(None, dry_run=True).plan)  # one step per class in the plan
            with click.progressbar(length=total, label="syncing", file=sys.stderr) as bar:
                report = syncer.run(targets, progress=bar.update)
        else:
            report = syncer.run(targets, dry_run=dry_run)
    except (ReloadPending, ClassesRefused) as exc:  # done what it could: say what, then the error line
        assert isinstance(exc.report, SyncReport)
        data = report_dict(exc.report)
        emit(as_json, data, report_text(data))
        raise
    data = report_dict(report)
    emit(as_json, data, report_text(data))


@main.command()
@json_option
@click.pass_context
@handles_errors
def verify(ctx: click.Context, as_json: bool) -> None:
    """Compare catalog, files on disk and what Asterisk sees; exit 0 only if they agree."""
    from ..verify import verify as run_verify

    diffs = run_verify(ctx.obj, syncer_of(ctx), AsteriskCli(ctx.obj.asterisk_cli_argv))
    data = {"ok": not diffs, "differences": [d.__dict__ for d in diffs]}
    text = "\n".join(f"{d.layer:<11} {d.moh_class}: {d.detail}" for d in diffs) or "catalog, disk and Asterisk agree"
    emit(as_json, data, text)
    if diffs:
        ctx.exit(1)
