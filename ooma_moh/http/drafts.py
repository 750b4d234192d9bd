"""Drafts and restore in the API (docs/http.md, "Drafts", "Restore"):

- ``POST …/moh/drafts`` (multipart ``file``, no disclaimer) converts and analyses a file without
  changing what callers hear → ``201`` the draft; one conversion per tenant at a time (429, as an
  upload), at most ``max_drafts_per_tenant`` drafts (429 ``too_many_drafts``);
- ``GET`` / ``DELETE …/moh/drafts/{draft}``: the draft, or forget it; another tenant's draft, an
  expired or a saved one is 404 ``no_draft`` (the audio and waveform are in :mod:`.audio`);
- ``PUT …/moh`` with ``draft=<id>`` saves one (:mod:`.api`);
- ``POST …/moh/drafts/{draft}/mix`` with JSON ``{"bed": "default"|"current", "bed_level_db": -18}``
  → ``201`` a new draft: the draft's voice over music (rules in :mod:`ooma_moh.beds`);
- ``POST …/moh/restore`` with ``disclaimer=accepted`` makes the previous file current again →
  ``201`` as an upload; ``409 nothing_to_restore``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import disclaimer
from ..beds import DEFAULT_BED_LEVEL_DB, check_bed
from ..model import Draft
from .api import check_disclaimer, current, receive_body, upload_in_progress
from .auth import authorised_tenant
from .backend import HttpBackend
from .context import BACKEND, PUBLICATIONS, WORKERS, ApiError, in_thread
from .uploads import fields_only


def draft_body(draft: Draft) -> dict[str, Any]:
    """The JSON of a draft."""
    return {
        "draft": draft.draft_id,
        "analysis": draft.upload.analysis,
        "expires_at": draft.expires_at.isoformat(),
        "original_name": draft.upload.original_name,
        "size": draft.upload.size,
        "duration_ms": draft.upload.duration_ms,
    }


def _make(backend: HttpBackend, tenant: str, path: Any, name: str) -> Draft:
    with backend.service() as service:
        return service.make_draft(tenant, path, name)


def _mix(backend: HttpBackend, tenant: str, draft_id: str, bed: str, level: float) -> Draft:
    with backend.service() as service:
        return service.mix_draft(tenant, draft_id, bed=bed, bed_level_db=level)


def _find(backend: HttpBackend, tenant: str, draft_id: str) -> Draft:
    with backend.service() as service:
        return service.draft(tenant, draft_id)


def _drop(backend: HttpBackend, tenant: str, draft_id: str) -> None:
    with backend.service() as service:
        service.drop_draft(tenant, draft_id)


def _restore(backend: HttpBackend, tenant: str, by: str) -> None:
    with backend.service() as service:
        service.restore(tenant, accept_disclaimer=True, accepted_by=by, disclaimer_version=disclaimer.VERSION)


async def post_draft(request: web.Request) -> web.StreamResponse:
    """``POST /tenants/{tenant}/moh/drafts``."""
    _, tenant = await authorised_tenant(request)
    publications = request.app[PUBLICATIONS]
    if not publications.begin_upload(tenant):  # one conversion per tenant at a time
        return upload_in_progress()
    try:
        spooled = await receive_body(request)
        if isinstance(spooled, web.Response):
            return spooled
        try:
            await authorised_tenant(request)  # still allowed after the body arrived
            if not spooled.has_file or spooled.path is None:
                raise ApiError(400, "missing_file", "the form has no part named file (the audio to analyse)")
            made = await in_thread(
                request, _make, request.app[BACKEND], tenant, spooled.path, spooled.filename, pool=WORKERS
            )
        finally:
            if spooled.path is not None:
                spooled.path.unlink(missing_ok=True)  # noqa: ASYNC240 - one spool file's unlink
    finally:
        publications.end_upload(tenant)
    return web.json_response(draft_body(made), status=201)


async def post_mix(request: web.Request) -> web.StreamResponse:
    """``POST /tenants/{tenant}/moh/drafts/{draft}/mix``."""
    _, tenant = await authorised_tenant(request)
    try:
        asked = await request.json()
        bed, level = check_bed(asked.get("bed"), asked.get("bed_level_db", DEFAULT_BED_LEVEL_DB))
    except (ValueError, AttributeError) as exc:  # not JSON, not an object, or out of range
        raise ApiError(400, "invalid_mix", f"the body must be JSON {{bed, bed_level_db}}: {exc}") from None
    publications = request.app[PUBLICATIONS]
    if not publications.begin_upload(tenant):  # a mix is a conversion: one per tenant at a time
        return upload_in_progress()
    try:
        made = await in_thread(
            request, _mix, request.app[BACKEND], tenant, request.match_info["draft"], bed, level, pool=WORKERS
        )
    finally:
        publications.end_upload(tenant)
    return web.json_response(draft_body(made), status=201)


async def get_draft(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/moh/drafts/{draft}``."""
    _, tenant = await authorised_tenant(request)
    found = await in_thread(request, _find, request.app[BACKEND], tenant, request.match_info["draft"])
    return web.json_response(draft_body(found))


async def delete_draft(request: web.Request) -> web.Response:
    """``DELETE /tenants/{tenant}/moh/drafts/{draft}``."""
    _, tenant = await authorised_tenant(request)
    await in_thread(request, _drop, request.app[BACKEND], tenant, request.match_info["draft"], pool=WORKERS)
    return web.Response(status=204)


async def post_restore(request: web.Request) -> web.Response:
    """``POST /tenants/{tenant}/moh/restore`` with ``disclaimer=accepted``."""
    who, tenant = await authorised_tenant(request)
    form = fields_only(await request.post())  # small: aiohttp bounds it with client_max_size
    check_disclaimer(form.accepted, form.disclaimer_version)
    publications = request.app[PUBLICATIONS]
    publications.converting(tenant)
    try:
        await in_thread(request, _restore, request.app[BACKEND], tenant, who.actor, pool=WORKERS)
    except BaseException:
        publications.forget(tenant)
        raise
    publications.start(tenant)
    return web.json_response(await current(request, tenant), status=201)
