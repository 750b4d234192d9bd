"""Who may act: the endpoint map (``endpoints``), API tokens, login links and sessions (``tokens``)."""

from __future__ import annotations

import contextlib
import datetime

import click

from ..app import open_catalog
from ..config import Settings
from ..model import validate_endpoint, validate_tenant_id
from .base import emit, handles_errors, json_option, main, service_of, wants_json


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
@handles_errors
def endpoints(ctx: click.Context, as_json: bool) -> None:
    """The endpoint -> tenant map the ARI hold handler falls back to (list it; or set/remove)."""
    if ctx.invoked_subcommand is None:
        mapping = service_of(ctx, writable=False).catalog.endpoints()
        emit(as_json, mapping, "\n".join(f"{e:<40} {t}" for e, t in mapping.items()) or "no endpoints mapped")


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
    emit(wants_json(ctx, as_json), {"endpoint": endpoint, "tenant": tenant}, f"{endpoint} -> {tenant}")


@endpoints.command("remove")
@click.argument("endpoint")
@json_option
@click.pass_context
@handles_errors
def endpoints_remove(ctx: click.Context, endpoint: str, as_json: bool) -> None:
    """Remove ENDPOINT's mapping."""
    endpoint = validate_endpoint(endpoint)
    service_of(ctx).catalog.map_endpoint(endpoint, None)
    emit(wants_json(ctx, as_json), {"endpoint": endpoint, "tenant": None}, f"{endpoint} unmapped")


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
    from ..http.tokens import create_token
    from ..service import utcnow

    if bool(tenant) == operator:
        raise click.UsageError("give --tenant T or --operator")
    with contextlib.closing(open_catalog(ctx.obj)) as catalog:
        token, bearer = create_token(catalog, tenant_id=tenant, now=utcnow())
    who = f"tenant {tenant}" if tenant else "the operator (every tenant)"
    emit(
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
    from ..service import utcnow

    with contextlib.closing(open_catalog(ctx.obj)) as catalog:
        revoked = catalog.revoke_token(token_id, utcnow())
    if not revoked:
        raise click.ClickException(f"no live token {token_id!r}")
    emit(as_json, {"id": token_id, "revoked": True}, f"token {token_id} revoked")


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
    from ..http.logins import create_login_link
    from ..service import utcnow

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
    from ..service import utcnow

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
    from ..service import utcnow

    validate_tenant_id(tenant)
    with contextlib.closing(open_catalog(ctx.obj)) as catalog:
        links, sessions = catalog.sign_out_tenant(tenant, utcnow())
    emit(
        as_json,
        {"tenant": tenant, "links_voided": links, "sessions_ended": sessions},
        f"tenant {tenant}: {sessions} session(s) ended, {links} unused link(s) voided",
    )
