"""The tenant admin HTTP API (``/api/v1``) on aiohttp.web: thin resources over the service.

Each resource finds the caller's token, checks the tenant, calls the service in a worker thread
(ffmpeg and SQLite never run on the event loop) and dumps JSON. Errors have one shape,
``{"error": {"code", "message"}}``, made in one place (:func:`error_response`). A token that may
not manage a tenant gets 404, exactly as for a tenant that does not exist: the API never tells
whether a tenant exists.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import disclaimer, golive
from ..config import Settings
from ..errors import (
    BedUnavailable,
    DisclaimerRequired,
    NoLongerAuthorised,
    NoSuchDraft,
    NoTenantFile,
    NothingToRestore,
    OomaMohError,
    StorageError,
    TooManyDrafts,
    UploadRejected,
)
from ..logsafe import printable
from ..model import MohSetting, TenantMoh
from ..rejections import Rejection
from ..storage import Catalog
from ..storage.base import Credentials
from . import page
from .auth import CHALLENGE, Principal, authorised_tenant, still_holds
from .backend import HttpBackend, PublishedView
from .context import BACKEND, NODES, PUBLICATIONS, READER, SETTINGS, VIEW, WORKERS, ApiError, in_thread
from .texts import TEXTS
from .uploads import Spooled, fields_only, spool_upload

log = logging.getLogger(__name__)
#: what a 429 for a tenant's second upload at once asks the client to wait (seconds)
UPLOAD_RETRY_AFTER_S = 5
#: what a 429 for one draft too many asks the client to wait (seconds): drafts last an hour
DRAFTS_RETRY_AFTER_S = 60


#: domain errors whose answer is always the same: (error, status, code, headers)
FIXED_ANSWERS: tuple[tuple[type[Exception], int, str, dict[str, str]], ...] = (
    (DisclaimerRequired, Rejection.DISCLAIMER_REQUIRED.status, Rejection.DISCLAIMER_REQUIRED.value, {}),
    (NoLongerAuthorised, 401, "unauthorized", CHALLENGE),
    (NoTenantFile, 404, "no_file", {}),
    (NoSuchDraft, 404, "no_draft", {}),
    (TooManyDrafts, 429, "too_many_drafts", {"Retry-After": str(DRAFTS_RETRY_AFTER_S)}),
    (NothingToRestore, 409, "nothing_to_restore", {}),
    (BedUnavailable, 503, "bed_unavailable", {}),
)


def as_api_error(exc: Exception) -> ApiError:
    """The one place where errors get their HTTP status, code and message."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UploadRejected):
        return ApiError(exc.rejection.status, exc.reason, str(exc))
    for kind, status, code, headers in FIXED_ANSWERS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc), headers)
    if isinstance(exc, StorageError):
        return ApiError(507 if exc.reason == "disk_full" else 503, exc.reason, str(exc))
    # ours but not the client's business (its text may name the server's paths): the log has it
    if isinstance(exc, OomaMohError):
        log.warning("answered 500 internal: %s", printable(exc, 300))
    return ApiError(500, "internal", "internal error: the server's log says more")


def error_response(exc: Exception) -> web.Response:
    """``exc`` answered as the API answers errors: ``{"error": {"code", "message"}}``."""
    error = as_api_error(exc)
    body = {"error": {"code": error.code, "message": str(error)}}
    return web.json_response(body, status=error.status, headers=error.headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Domain errors and our own API errors in one shape — JSON for the API, a page in the admin's
    language for the page's routes; anything else logged and answered 500."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except (ApiError, OomaMohError) as exc:
        return _for_the_route(request, as_api_error(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:  # aiohttp's own (404, 405 with its Allow, 413, …) in our shape
            kept = {name: exc.headers[name] for name in ("Allow",) if name in exc.headers}
            code = exc.reason.lower().replace(" ", "_")
            return _for_the_route(request, ApiError(exc.status, code, exc.reason, kept))
        raise
    except Exception:
        log.exception("HTTP %s %s failed", request.method, printable(request.path))
        return _for_the_route(request, as_api_error(Exception("internal error")))


#: routes that answer JSON whatever happens; every other one is a page a browser shows
JSON_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics")


def _for_the_route(request: web.Request, error: ApiError) -> web.Response:
    """``error`` as this route answers it: JSON for the API, a page with the error's sentence in the
    admin's language for the sign-in, sign-out and page routes (with the headers its status needs)."""
    if request.path.startswith(JSON_PREFIXES):
        return error_response(error)
    lang = page.language(request)
    texts = TEXTS[lang]
    sentence = texts.get(f"error_{error.code}") or texts["error_other"].format(message=str(error))
    shown = page.message_page(lang, "title", sentence, error.status)
    shown.headers.update(error.headers)
    return shown


def tenant_body(tenant: TenantMoh, settings: Settings, status: golive.Status) -> dict[str, Any]:
    """The JSON of a tenant's music: setting, file, disclaimer, class and status."""
    body: dict[str, Any] = {
        "tenant": tenant.tenant_id,
        "setting": tenant.setting.value,
        "class": tenant.moh_class(settings.class_prefix),
        "file": None,
        "disclaimer": None,
        "status": status.as_json(),
    }
    if tenant.upload is not None:
        up = tenant.upload
        body["file"] = {
            "name": up.original_name,
            "size": up.size,
            "duration_ms": up.duration_ms,
            "sha256": up.sha256,
            "uploaded_at": up.uploaded_at.isoformat(),
            "uploaded_by": tenant.disclaimer.accepted_by if tenant.disclaimer else None,
        }
    body["analysis"] = tenant.upload.analysis if tenant.upload is not None else None
    body["previous"] = None
    if tenant.previous is not None:
        before = tenant.previous
        body["previous"] = {
            "original_name": before.original_name,
            "size": before.size,
            "duration_ms": before.duration_ms,
            "uploaded_at": before.uploaded_at.isoformat(),
        }
    if tenant.disclaimer is not None:
        body["disclaimer"] = {
            "accepted_by": tenant.disclaimer.accepted_by,
            "accepted_at": tenant.disclaimer.accepted_at.isoformat(),
            "file_sha256": tenant.disclaimer.sha256,
            "text_version": tenant.disclaimer.text_version,
        }
    return body


def read_state(settings: Settings, reader: Catalog, view: PublishedView, tenant_id: str) -> tuple[TenantMoh, bool]:
    """(blocking) The tenant as the catalog has it, and whether Asterisk plays exactly that."""
    tenant = reader.get(tenant_id) or TenantMoh(tenant_id, MohSetting.DEFAULT)
    version_dir = view.version_dir(tenant) if tenant.setting is MohSetting.FILE else None
    # its own class only: a read of every published row was 142 ms a GET at 100,000 tenants
    published = view.published({settings.class_prefix + tenant_id})
    return tenant, golive.is_live(tenant, published, settings.class_prefix, version_dir)


@dataclass
class Known:
    """What a read of the truth found for a tenant — kept by :mod:`ooma_moh.memview` while it holds — and
    the JSON of its usual answer (live, nothing tracked, no cluster), made once."""

    tenant: TenantMoh
    live: bool
    live_answer: str | None = None


async def read_or_recall(request: web.Request, tenant_id: str) -> Known:
    """:func:`read_state` in the catalog thread — or what it found last time, while no source has
    changed since (the rules of :mod:`ooma_moh.memview`)."""
    memory = request.app[BACKEND].memory
    read = (read_state, request.app[SETTINGS], request.app[READER], request.app[VIEW], tenant_id)
    if memory is None:
        return Known(*await in_thread(request, *read))
    publications = request.app[PUBLICATIONS]
    known: Known | None = memory.recall(tenant_id, publications.changes(tenant_id))
    if known is not None:
        return known
    ticket = memory.ticket(tenant_id, publications.changes(tenant_id))
    known = Known(*await in_thread(request, *read))
    memory.keep(ticket, tenant_id, publications.changes(tenant_id), known)
    return known


async def decided(request: web.Request, tenant_id: str) -> tuple[Known, golive.Status, int, int]:
    """The tenant as read or recalled, its status (decided by :func:`ooma_moh.golive.decide`),
    and (live_on, total) in a cluster; starts a publication if the tenant is neither live nor
    moving."""
    settings, publications = request.app[SETTINGS], request.app[PUBLICATIONS]
    moving = publications.tracked(tenant_id) is not None  # before the read: golive rule 3
    known = await read_or_recall(request, tenant_id)
    live_on = total = 0
    if NODES in request.app:
        version = known.tenant.version if known.tenant.setting is MohSetting.FILE else None
        live_on, total = await in_thread(
            request, request.app[NODES].live_on, settings.class_prefix + tenant_id, version
        )
    tracked = publications.tracked(tenant_id)
    status = golive.decide(tracked, live_here=known.live, ended_during_read=moving, live_on=live_on, total=total)
    if tracked is not None and tracked.state is golive.State.ERROR and status is not None and status != tracked:
        publications.forget(tenant_id)  # live after all: the error no longer holds
    elif status is not None and status.state is golive.State.ERROR and publications.retry_due(tenant_id):
        status = None  # golive rule 1: its backoff has passed, try again
    return known, status or publications.start(tenant_id), live_on, total


def _body(settings: Settings, known: Known, status: golive.Status, live_on: int, total: int) -> dict[str, Any]:
    body = tenant_body(known.tenant, settings, status)
    if total:  # once agents report: a cluster
        body["status"]["nodes"] = {"live": live_on, "of": total}
    return body


async def current(request: web.Request, tenant_id: str) -> dict[str, Any]:
    """The tenant's body with its status (:func:`decided`). In a cluster (agents have reported),
    ``status.nodes`` says on how many nodes callers hear the current music."""
    return _body(request.app[SETTINGS], *await decided(request, tenant_id))


LIVE = golive.Status(golive.State.LIVE)


async def get_moh(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/moh``; the usual answer (live on this host) made once per read."""
    _, tenant_id = await authorised_tenant(request)
    known, status, live_on, total = await decided(request, tenant_id)
    if status == LIVE and not total:
        if known.live_answer is None:
            known.live_answer = json.dumps(tenant_body(known.tenant, request.app[SETTINGS], LIVE))
        return web.Response(text=known.live_answer, content_type="application/json")
    return web.json_response(_body(request.app[SETTINGS], known, status, live_on, total))


def _upload(
    backend: HttpBackend, tenant: str, spooled: Spooled, by: str, still_valid: Callable[[Credentials], None]
) -> None:
    if spooled.path is None:
        raise ApiError(400, "missing_file", "the form has no part named file (the audio to upload): nothing was stored")
    with backend.service() as service:
        service.upload(
            tenant,
            spooled.path,
            accept_disclaimer=True,
            accepted_by=by,
            original_name=spooled.filename,
            disclaimer_version=disclaimer.VERSION,
            before_commit=lambda: still_valid(service.catalog),  # revoked during the conversion: nothing
        )


def _delete(backend: HttpBackend, tenant: str) -> None:
    with backend.service() as service:
        service.delete(tenant)


async def put_moh(request: web.Request) -> web.StreamResponse:
    """``PUT /tenants/{tenant}/moh``: multipart ``file`` + ``disclaimer=accepted``."""
    who, tenant = await authorised_tenant(request)
    publications = request.app[PUBLICATIONS]
    if not publications.begin_upload(tenant):  # before a byte of the body is read
        return upload_in_progress()
    try:
        return await _receive_and_store(request, who, tenant)
    finally:
        publications.end_upload(tenant)


def upload_in_progress() -> web.Response:
    """429 for a tenant's second conversion at once (upload, draft, mix), the connection closed."""
    return closing_error(
        ApiError(
            429,
            "upload_in_progress",
            "another upload for this tenant is being received or converted: try again when it is done",
            {"Retry-After": str(UPLOAD_RETRY_AFTER_S)},
        )
    )


def closing_error(exc: ApiError) -> web.Response:
    """``exc`` answered, and the connection closed (the rest of its body is not read)."""
    response = error_response(exc)
    response.force_close()
    return response


async def receive_body(request: web.Request) -> Spooled | web.Response:
    """The multipart body spooled (``spool_upload``) within ``http_body_timeout_s``, or the error
    response that ends the request."""
    settings = request.app[SETTINGS]
    try:
        async with asyncio.timeout(settings.http_body_timeout_s):
            if request.content_type == "application/x-www-form-urlencoded":  # fields only: no file
                return fields_only(await request.post())
            return await spool_upload(request, settings.max_upload_bytes)
    except TimeoutError:
        return closing_error(
            ApiError(408, "timeout", f"the upload did not arrive within {settings.http_body_timeout_s:g} s")
        )
    except ApiError as exc:
        return closing_error(exc)


def check_disclaimer(accepted: bool, version: str | None) -> None:
    """``DisclaimerRequired`` unless the form accepted the disclaimer; 409 ``disclaimer_changed``
    if it names a version of the text other than today's."""
    if not accepted:
        raise DisclaimerRequired(
            "the rights disclaimer must be accepted (part disclaimer=accepted):"
            " confirm you hold the rights to play this file to callers; nothing was stored"
        )
    if version not in (None, disclaimer.VERSION):
        raise ApiError(
            Rejection.DISCLAIMER_CHANGED.status,
            Rejection.DISCLAIMER_CHANGED.value,
            "the disclaimer's text has changed since it was shown"
            f" (version {disclaimer.VERSION}): read it again; nothing was stored",
        )


def _save_draft(
    backend: HttpBackend, tenant: str, draft_id: str, by: str, still_valid: Callable[[Credentials], None]
) -> None:
    with backend.service() as service:
        service.save_draft(
            tenant,
            draft_id,
            accept_disclaimer=True,
            accepted_by=by,
            disclaimer_version=disclaimer.VERSION,
            before_commit=lambda: still_valid(service.catalog),
        )


async def _receive_and_store(request: web.Request, who: Principal, tenant: str) -> web.StreamResponse:
    publications = request.app[PUBLICATIONS]
    spooled = await receive_body(request)
    if isinstance(spooled, web.Response):
        return spooled
    try:
        # the body may have taken minutes: a token revoked or a session signed out meanwhile
        # stops the upload here, before anything is converted or stored
        await authorised_tenant(request)
        check_disclaimer(spooled.accepted, spooled.disclaimer_version)
        if spooled.draft is not None and spooled.has_file:
            raise ApiError(400, "file_and_draft", "send a file or a draft to save, not both: nothing was stored")
        publications.converting(tenant)
        try:
            if spooled.draft is not None:
                args: tuple[Any, ...] = (_save_draft, request.app[BACKEND], tenant, spooled.draft)
            else:
                args = (_upload, request.app[BACKEND], tenant, spooled)
            await in_thread(request, *args, who.actor, still_holds(request), pool=WORKERS)
        except BaseException:
            publications.forget(tenant)
            raise
    finally:
        if spooled.path is not None:
            spooled.path.unlink(missing_ok=True)
    publications.start(tenant)
    return web.json_response(await current(request, tenant), status=201)


async def delete_moh(request: web.Request) -> web.Response:
    """``DELETE /tenants/{tenant}/moh``: back to the default music."""
    _, tenant = await authorised_tenant(request)
    await in_thread(request, _delete, request.app[BACKEND], tenant, pool=WORKERS)
    request.app[PUBLICATIONS].start(tenant)
    return web.Response(status=204)
