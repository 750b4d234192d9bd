"""``ooma-moh``: the operators' command line. Commands are thin: build the service, call it,
print the result (``--json`` for scripts), turn ``OomaMohError`` into a one-line failure."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import getpass
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .app import build_service, build_syncer, create_catalog, open_catalog
from .asterisk_cli import AsteriskCli
from .asterisk_conf import write_samples
from .config import Settings, load_settings
from .errors import OomaMohError, ReloadPending
from .media import write_wav
from .model import FORMATS_BY_EXTENSION, MohSetting, TenantMoh, validate_endpoint, validate_tenant_id
from .service import MohService
from .sync import Change, ClassesRefused, Syncer, SyncReport


def tenant_dict(tenant: TenantMoh, prefix: str) -> dict[str, Any]:
    """A tenant as plain JSON-able data."""
    data: dict[str, Any] = {
        "tenant": tenant.tenant_id,
        "setting": tenant.setting.value,
        "moh_class": tenant.moh_class(prefix),
        "updated_at": tenant.updated_at.isoformat() if tenant.updated_at else None,
        "file": None,
        "disclaimer": None,
        "renditions": [],
    }
    if tenant.upload:
        up = tenant.upload
        data["file"] = {
            "original_name": up.original_name,
            "size": up.size,
            "sha256": up.sha256,
            "duration_ms": up.duration_ms,
            "container": up.container,
            "uploaded_at": up.uploaded_at.isoformat(),
        }
    if tenant.disclaimer:
        d = tenant.disclaimer
        data["disclaimer"] = {
            "accepted_by": d.accepted_by,
            "accepted_at": d.accepted_at.isoformat(),
            "sha256": d.sha256,
        }
    data["renditions"] = [
        {
            "format": r.extension,
            "codec": FORMATS_BY_EXTENSION[r.extension].codec,
            "rate": r.sample_rate,
            "bytes": r.size,
            "sha256": r.sha256,
        }
        for r in tenant.renditions
    ]
    return data


def describe(data: dict[str, Any]) -> str:
    """Human-readable form of :func:`tenant_dict`."""
    lines = [f"tenant      {data['tenant']}", f"setting     {data['setting']}", f"moh class   {data['moh_class']}"]
    if data["file"]:
        f = data["file"]
        lines.append(
            f"file        {f['original_name']} ({f['container']}, {f['size']:,} bytes,"
            f" {f['duration_ms'] / 1000:.2f} s, sha256 {f['sha256'][:16]}…) uploaded {f['uploaded_at']}"
        )
    if data["disclaimer"]:
        d = data["disclaimer"]
        lines.append(f"disclaimer  accepted by {d['accepted_by']} at {d['accepted_at']} for sha256 {d['sha256'][:16]}…")
    if "nodes" in data:
        lines.append(f"nodes       live on {data['nodes']['live']} of {data['nodes']['of']}")
    for r in data["renditions"]:
        lines.append(f"rendition   .{r['format']:<6} {r['codec']:<11} {r['rate']:>6} Hz {r['bytes']:>10,} bytes")
    return "\n".join(lines)


def emit(ctx: click.Context, as_json: bool, data: Any, text: str) -> None:
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


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def service_of(ctx: click.Context, *, writable: bool = True) -> MohService:
    """The service for this invocation, built once; ``writable=False`` for commands that only
    read (they then create nothing and work on a read-only or full disk)."""
    if "service" not in ctx.meta:
        ctx.meta["service"] = build_service(ctx.obj, writable=writable)
    service: MohService = ctx.meta["service"]
    return service


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
    emit(ctx, as_json, {"home": str(ctx.obj.home)}, f"catalog ready in {ctx.obj.home}")


@main.command()
@click.argument("tenant")
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--accept-disclaimer", is_flag=True, help="Confirm the tenant holds the rights to this file.")
@click.option(
    "--by",
    "accepted_by",
    default=getpass.getuser,
    show_default="the Unix user",
    help="Who accepted the disclaimer: printable text, 1-128 characters.",
)
@click.option("--name", "original_name", help="Original file name to record (default: FILE's name).")
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
    as_json: bool,
) -> None:
    """Make FILE the music TENANT's callers hear on hold (FILE may be - for stdin)."""
    validate_tenant_id(tenant)
    service = service_of(ctx)
    source = sys.stdin.buffer if file == "-" else Path(file)
    result = service.upload(
        tenant, source, accept_disclaimer=accept_disclaimer, accepted_by=accepted_by, original_name=original_name
    )
    data = tenant_dict(result, ctx.obj.class_prefix)
    emit(ctx, as_json, data, describe(data))


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
        from .storage.nodes import NodeRegistry

        registry = NodeRegistry(ctx.obj.database_url)
        try:
            live, total = registry.live_on(
                ctx.obj.class_prefix + found.tenant_id, found.version if found.setting is MohSetting.FILE else None
            )
        finally:
            registry.close()
        data["nodes"] = {"live": live, "of": total}
    emit(ctx, as_json, data, describe(data))


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
    emit(ctx, as_json, tenants, text)


@main.command()
@click.argument("tenant")
@json_option
@click.pass_context
@handles_errors
def delete(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """Remove TENANT's file: its callers hear the default music again."""
    validate_tenant_id(tenant)
    data = tenant_dict(service_of(ctx).delete(tenant), ctx.obj.class_prefix)
    emit(ctx, as_json, data, f"tenant {tenant} is on default music")


@main.command()
@click.argument("tenant")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True), help="WAV file to write."
)
@json_option
@click.pass_context
@handles_errors
def listen(ctx: click.Context, tenant: str, output: str, as_json: bool) -> None:
    """Write what TENANT's callers hear (the 16 kHz rendition) as a WAV file."""
    validate_tenant_id(tenant)
    audio = service_of(ctx, writable=False).rendition_bytes(tenant, "sln16")
    try:
        write_wav(audio, Path(output))
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    seconds = len(audio) / 32000
    emit(
        ctx,
        as_json,
        {"tenant": tenant, "output": output, "seconds": seconds},
        f"wrote {output}: {seconds:.2f} s, 16 kHz mono",
    )


@main.command()
@click.option("--keep", type=click.Path(file_okay=False), help="Directory for the lab's files (kept afterwards).")
@handles_errors
def demo(keep: str | None) -> None:
    """The main job end to end: lab Asterisk, upload, sync, and a recorded caller who must hear it."""
    from .lab.demo import run_demo  # only here: the runtime commands never import the lab

    if not run_demo(click.echo, Path(keep) if keep else None):
        raise click.ClickException("the demo caller did not hear the tenant's music")


@main.command("asterisk-conf")
@click.option(
    "--dest",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write into (created if missing); merge from there into /etc/asterisk.",
)
@click.option("--force", is_flag=True, help="Replace files that exist already.")
@json_option
@click.pass_context
@handles_errors
def write_asterisk_conf(ctx: click.Context, dest: str, force: bool, as_json: bool) -> None:
    """Write the Asterisk configuration ooma-moh needs (docs/asterisk.md) into DEST."""
    written = write_samples(Path(dest), force=force)
    emit(ctx, as_json, {"dest": dest, "written": [str(p) for p in written]}, "\n".join(f"wrote {p}" for p in written))


def syncer_of(ctx: click.Context) -> Syncer:
    """The syncer for this invocation."""
    service = service_of(ctx)
    return build_syncer(ctx.obj, service)


def report_dict(report: SyncReport) -> dict[str, Any]:
    """A sync report as JSON-able data. ``reload`` is ``done``, ``pending`` (static mode: the
    publication changed, Asterisk could not be told; the next sync reloads) or ``not needed``;
    ``refused`` the classes left alone because a realtime row ooma-moh did not write holds them."""
    return {
        "dry_run": report.dry_run,
        "summary": report.counts,
        "files_written": report.files_written,
        "published": report.published,
        "reloaded": report.reloaded,
        "reload": report.reload,
        "old_versions_retired": report.retired,
        "old_versions_deleted": report.deleted,
        "classes": [
            {"class": p.moh_class, "change": p.change.value, "directory": p.directory}
            for p in report.plan
            if p.change is not Change.UNCHANGED
        ],
        "refused": report.refused,
    }


def report_text(data: dict[str, Any]) -> str:
    """Human-readable form of :func:`report_dict`."""
    lines = [f"{c['change']:<9} {c['class']}  {c['directory'] or ''}".rstrip() for c in data["classes"]]
    lines += [f"{'refused':<9} {c}  held by a realtime row ooma-moh did not write: left alone" for c in data["refused"]]
    s = data["summary"]
    lines.append(
        ("would sync: " if data["dry_run"] else "synced: ")
        + f"{s['added']} added, {s['changed']} changed, {s['removed']} removed, {s['unchanged']} unchanged"
    )
    if not data["dry_run"]:
        reload = "pending (the next sync retries it)" if data["reload"] == "pending" else data["reload"]
        lines.append(
            f"files written: {data['files_written']}; reload: {reload};"
            f" old versions retired {data['old_versions_retired']}, deleted {data['old_versions_deleted']}"
        )
    return "\n".join(lines)


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
        emit(ctx, as_json, data, report_text(data))
        raise
    data = report_dict(report)
    emit(ctx, as_json, data, report_text(data))


@main.command()
@json_option
@click.pass_context
@handles_errors
def verify(ctx: click.Context, as_json: bool) -> None:
    """Compare catalog, files on disk and what Asterisk sees; exit 0 only if they agree."""
    from .verify import verify as run_verify

    diffs = run_verify(ctx.obj, syncer_of(ctx), AsteriskCli(ctx.obj.asterisk_cli_argv))
    data = {"ok": not diffs, "differences": [d.__dict__ for d in diffs]}
    text = "\n".join(f"{d.layer:<11} {d.moh_class}: {d.detail}" for d in diffs) or "catalog, disk and Asterisk agree"
    emit(ctx, as_json, data, text)
    if diffs:
        ctx.exit(1)


@main.group()
def serve() -> None:
    """Long-running services: the FastAGI server and the ARI hold handler."""


def setup_logging(log_format: str = "text") -> None:
    """INFO logging to stderr for long-running processes, as text or JSON lines (``log_format``);
    every line, tracebacks included, without a credential's secret (:mod:`.logsafe`)."""
    import logging

    from .logsafe import formatter

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

    from . import systemd

    async def supervised() -> None:
        pings = asyncio.create_task(systemd.watchdog(), name="watchdog")
        try:
            await coro
        finally:
            pings.cancel()
            await asyncio.gather(pings, return_exceptions=True)

    setup_logging(settings.log_format)
    try:
        asyncio.run(supervised())
    except KeyboardInterrupt:
        pass


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
    from .agi.server import run_fastagi

    settings = with_options(ctx.obj, agi_listen=listen, metrics_listen=metrics_listen, log_format=log_format)
    run_service(run_fastagi(settings, open_catalog(settings, writable=False)), settings)


@serve.command("ari")
@click.option("--app", help="Stasis application name (or OOMA_MOH_ARI_APP; default ooma-moh).")
@service_options
@click.pass_context
@handles_errors
def serve_ari(ctx: click.Context, app: str | None, metrics_listen: str | None, log_format: str | None) -> None:
    """ARI hold handler: held callers hear the holder's tenant music (docs/ari.md)."""
    from .ari.service import run_hold_handler

    settings = with_options(ctx.obj, ari_app=app, metrics_listen=metrics_listen, log_format=log_format)
    run_service(run_hold_handler(settings, open_catalog(settings, writable=False)), settings)


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
@handles_errors
def endpoints(ctx: click.Context, as_json: bool) -> None:
    """The endpoint -> tenant map the ARI hold handler falls back to (list it; or set/remove)."""
    if ctx.invoked_subcommand is None:
        mapping = service_of(ctx, writable=False).catalog.endpoints()
        emit(ctx, as_json, mapping, "\n".join(f"{e:<40} {t}" for e, t in mapping.items()) or "no endpoints mapped")


def wants_json(ctx: click.Context, as_json: bool) -> bool:
    """``--json`` given to this subcommand or to its group (``endpoints --json set ...``)."""
    return as_json or bool(ctx.parent is not None and ctx.parent.params.get("as_json"))


@endpoints.command("set")
@click.argument("endpoint")
@click.argument("tenant")
@json_option
@click.pass_context
@handles_errors
def endpoints_set(ctx: click.Context, endpoint: str, tenant: str, as_json: bool) -> None:
    """Map ENDPOINT (e.g. PJSIP/acme-100) to TENANT."""
    endpoint, tenant = validate_endpoint(endpoint), validate_tenant_id(tenant)
    service_of(ctx).catalog.map_endpoint(endpoint, tenant)
    emit(ctx, wants_json(ctx, as_json), {"endpoint": endpoint, "tenant": tenant}, f"{endpoint} -> {tenant}")


@endpoints.command("remove")
@click.argument("endpoint")
@json_option
@click.pass_context
@handles_errors
def endpoints_remove(ctx: click.Context, endpoint: str, as_json: bool) -> None:
    """Remove ENDPOINT's mapping."""
    endpoint = validate_endpoint(endpoint)
    service_of(ctx).catalog.map_endpoint(endpoint, None)
    emit(ctx, wants_json(ctx, as_json), {"endpoint": endpoint, "tenant": None}, f"{endpoint} unmapped")


@serve.command("http")
@click.option("--listen", help="HOST:PORT to listen on (or OOMA_MOH_HTTP_LISTEN; default 127.0.0.1:8480).")
@service_options
@click.pass_context
@handles_errors
def serve_http(ctx: click.Context, listen: str | None, metrics_listen: str | None, log_format: str | None) -> None:
    """The tenant admin HTTP API (docs/http.md); changes go live without `sync`. /metrics,
    /healthz and /readyz are served on its port too."""
    from .http.server import run_http

    settings = with_options(ctx.obj, http_listen=listen, metrics_listen=metrics_listen, log_format=log_format)
    open_catalog(settings, writable=False).close()  # refuse a home without a catalog at once
    run_service(run_http(settings), settings)


@main.group()
def tokens() -> None:
    """Bearer tokens of the HTTP API: for one tenant's admin, or for the operator."""


@tokens.command("create")
@click.option("--tenant", help="The tenant whose admin gets the token.")
@click.option("--operator", is_flag=True, help="A token for every tenant.")
@json_option
@click.pass_context
@handles_errors
def tokens_create(ctx: click.Context, tenant: str | None, operator: bool, as_json: bool) -> None:
    """Create a token; the bearer string is the last line of the output (shown once)."""
    from .http.tokens import create_token
    from .service import utcnow

    if bool(tenant) == operator:
        raise click.UsageError("give --tenant T or --operator")
    with contextlib.closing(open_catalog(ctx.obj)) as catalog:
        token, bearer = create_token(catalog, tenant_id=tenant, now=utcnow())
    who = f"tenant {tenant}" if tenant else "the operator (every tenant)"
    emit(
        ctx,
        as_json,
        {"id": token.id, "scope": token.scope, "tenant": tenant, "token": bearer},
        f"token {token.id} for {who}; keep it secret, it is not shown again:\n{bearer}",
    )


@tokens.command("list")
@json_option
@click.pass_context
@handles_errors
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """Every token: id, scope, tenant, created, revoked (never the secret)."""
    with contextlib.closing(open_catalog(ctx.obj, writable=False)) as catalog:
        rows = [
            {
                "id": t.id,
                "scope": t.scope,
                "tenant": t.tenant_id,
                "created_at": t.created_at.isoformat(),
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in catalog.tokens()
        ]
    emit(
        ctx,
        as_json,
        rows,
        "\n".join(
            f"{r['id']}  {r['scope']:<8} {r['tenant'] or '-':<24} created {r['created_at']}"
            + (f"  REVOKED {r['revoked_at']}" if r["revoked_at"] else "")
            for r in rows
        )
        or "no tokens",
    )


@tokens.command("revoke")
@click.argument("token_id")
@json_option
@click.pass_context
@handles_errors
def tokens_revoke(ctx: click.Context, token_id: str, as_json: bool) -> None:
    """Revoke TOKEN_ID: requests with it get 401 from now on."""
    from .service import utcnow

    with contextlib.closing(open_catalog(ctx.obj)) as catalog:
        revoked = catalog.revoke_token(token_id, utcnow())
    if not revoked:
        raise click.ClickException(f"no live token {token_id!r}")
    emit(ctx, as_json, {"id": token_id, "revoked": True}, f"token {token_id} revoked")


@tokens.command("link")
@click.option("--tenant", required=True, help="The tenant whose admin signs in.")
@click.option(
    "--by",
    "label",
    default="tenant admin",
    show_default=True,
    help="Who the link is for; recorded as who accepted the disclaimer of their uploads.",
)
@json_option
@click.pass_context
@handles_errors
def tokens_link(ctx: click.Context, tenant: str, label: str, as_json: bool) -> None:
    """A one-time sign-in link to the Music on hold page for TENANT's admin; the URL is the last
    line of the output. It works once, for login_link_ttl_s (15 minutes by default)."""
    from .http.logins import create_login_link
    from .service import utcnow

    settings: Settings = ctx.obj
    with contextlib.closing(open_catalog(settings)) as catalog:
        link, credential = create_login_link(
            catalog,
            tenant_id=tenant,
            label=label,
            now=utcnow(),
            ttl=datetime.timedelta(seconds=settings.login_link_ttl_s),
        )
    url = f"{settings.public_url}/login/{credential}"
    emit(
        ctx,
        as_json,
        {"id": link.id, "tenant": tenant, "expires_at": link.expires_at.isoformat(), "url": url},
        f"sign-in link for tenant {tenant} ({link.label}); it works once, until"
        f" {link.expires_at.isoformat(timespec='seconds')}:\n{url}",
    )


@tokens.command("sessions")
@json_option
@click.pass_context
@handles_errors
def tokens_sessions(ctx: click.Context, as_json: bool) -> None:
    """Sign-in links that can still be used and browser sessions still open (never a secret)."""
    from .service import utcnow

    with contextlib.closing(open_catalog(ctx.obj, writable=False)) as catalog:
        links, sessions = catalog.open_sign_ins(utcnow())
    rows = [
        {
            "kind": "link",
            "id": x.id,
            "tenant": x.tenant_id,
            "by": x.label,
            "created_at": x.created_at.isoformat(),
            "expires_at": x.expires_at.isoformat(),
        }
        for x in links
    ] + [
        {
            "kind": "session",
            "id": x.id,
            "tenant": x.tenant_id,
            "by": x.label,
            "created_at": x.created_at.isoformat(),
            "expires_at": x.expires_at.isoformat(),
        }
        for x in sessions
    ]
    emit(
        ctx,
        as_json,
        rows,
        "\n".join(f"{r['kind']:<7} {r['id']}  {r['tenant']:<24} {r['by']}  until {r['expires_at']}" for r in rows)
        or "no open links or sessions",
    )


@tokens.command("sign-out")
@click.option("--tenant", required=True, help="The tenant whose admins are signed out.")
@json_option
@click.pass_context
@handles_errors
def tokens_sign_out(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """End every browser session of TENANT and void its unused sign-in links (a link sent to the
    wrong person, a shared computer): they get 401 / "cancelled" from now on."""
    from .service import utcnow

    validate_tenant_id(tenant)
    with contextlib.closing(open_catalog(ctx.obj)) as catalog:
        links, sessions = catalog.sign_out_tenant(tenant, utcnow())
    emit(
        ctx,
        as_json,
        {"tenant": tenant, "links_voided": links, "sessions_ended": sessions},
        f"tenant {tenant}: {sessions} session(s) ended, {links} unused link(s) voided",
    )


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
    from .storage.postgres import LATEST

    settings: Settings = ctx.obj
    applied = create_catalog(settings, start_over=start_over)
    where = "PostgreSQL catalog" if settings.database_url else f"SQLite catalog {settings.catalog_path}"
    emit(
        ctx,
        as_json,
        {
            "backend": "postgresql" if settings.database_url else "sqlite",
            "applied": applied,
            "version": LATEST if settings.database_url else None,
        },
        f"{where}: " + (f"applied {', '.join(map(str, applied))}" if applied else "already current"),
    )


@main.command()
@click.option("--node-id", help="This node's name (default OOMA_MOH_NODE_ID, else the host name).")
@service_options
@click.pass_context
@handles_errors
def agent(ctx: click.Context, node_id: str | None, metrics_listen: str | None, log_format: str | None) -> None:
    """Keep this Asterisk node's classes equal to the shared catalog (docs/cluster.md)."""
    from .agent import default_node_id, run_agent

    settings = with_options(ctx.obj, metrics_listen=metrics_listen, log_format=log_format)
    setup_logging(settings.log_format)
    run_agent(settings, node_id or settings.node_id or default_node_id())


@main.command()
@json_option
@click.pass_context
@handles_errors
def nodes(ctx: click.Context, as_json: bool) -> None:
    """The cluster's nodes: when each last synced, its last error, and how far behind it is."""
    from .service import utcnow
    from .storage.nodes import NodeRegistry

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
        ctx,
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


from .doctor import doctor_command  # noqa: E402  (the doctor module imports nothing from this one)

main.add_command(doctor_command)
