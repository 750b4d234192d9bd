"""The tenant admin HTTP API (``/api/v1``) on aiohttp.web: thin resources over the service.

Each resource finds the caller's token, checks the tenant, calls the service in a worker thread
(ffmpeg and SQLite never run on the event loop) and dumps JSON. Errors have one shape,
``{"error": {"code", "message"}}``, made in one place (:func:`error_response`). A token that may
not manage a tenant gets 404, exactly as for a tenant that does not exist: the API never tells
whether a tenant exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from .. import disclaimer, health
from ..app import ari_reload, build_syncer, open_blobs, open_catalog, service_session
from ..config import Settings
from ..errors import DisclaimerRequired, NoTenantFile, OomaMohError, StorageError, UploadRejected
from ..logsafe import printable
from ..model import MohSetting, TenantMoh
from ..storage import Blobs, Catalog
from ..sync import Syncer
from . import page
from .auth import authorised_tenant
from .context import (
    BLOBS,
    CATALOG_THREAD,
    INCOMING,
    NODES,
    PROBE,
    PUBLICATIONS,
    READER,
    SETTINGS,
    SIGN_IN_THREAD,
    VIEW,
    WORKERS,
    ApiError,
    in_thread,
)
from .openapi import OPENAPI
from .publication import Publications, State, Status, is_live

log = logging.getLogger(__name__)
MULTIPART_SLACK = 64 * 1024  # part headers and the disclaimer fields around the audio

#: UploadRejected reason -> HTTP status (anything else: 422)
REJECTION_STATUS = {"too_large": 413, "unrecognised_format": 415, "no_audio": 415, "empty": 422}


def error_response(exc: Exception) -> web.Response:
    """The one place where errors become HTTP answers."""
    if isinstance(exc, ApiError):
        status, code = exc.status, exc.code
    elif isinstance(exc, UploadRejected):
        status, code = REJECTION_STATUS.get(exc.reason, 422), exc.reason
    elif isinstance(exc, DisclaimerRequired):
        status, code = 422, "disclaimer_required"
    elif isinstance(exc, NoTenantFile):
        status, code = 404, "no_file"
    elif isinstance(exc, StorageError):
        status, code = (507 if exc.reason == "disk_full" else 503), exc.reason
    else:
        status, code = 500, "internal"
    return web.json_response({"error": {"code": code, "message": str(exc)}}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Domain errors and our own API errors as JSON; anything else logged and answered 500."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except (ApiError, OomaMohError) as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return web.json_response(
                {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": exc.reason}}, status=exc.status
            )
        raise
    except Exception:
        log.exception("HTTP %s %s failed", request.method, printable(request.path))
        return error_response(Exception("internal error"))


def tenant_body(tenant: TenantMoh, settings: Settings, status: Status) -> dict[str, Any]:
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
    if tenant.disclaimer is not None:
        body["disclaimer"] = {
            "accepted_by": tenant.disclaimer.accepted_by,
            "accepted_at": tenant.disclaimer.accepted_at.isoformat(),
            "file_sha256": tenant.disclaimer.sha256,
            "text_version": tenant.disclaimer.text_version,
        }
    return body


def read_state(settings: Settings, reader: Catalog, view: Syncer, tenant_id: str) -> tuple[TenantMoh, bool]:
    """(blocking) The tenant as the catalog has it, and whether Asterisk plays exactly that."""
    tenant = reader.get(tenant_id) or TenantMoh(tenant_id, MohSetting.DEFAULT)
    version_dir = view.version_dir(tenant) if tenant.setting is MohSetting.FILE else None
    return tenant, is_live(tenant, view.published(), settings.class_prefix, version_dir)


async def current(request: web.Request, tenant_id: str) -> dict[str, Any]:
    """The tenant's body with its status; starts a publication if it is neither live nor moving.
    In a cluster (agents have reported), ``status.nodes`` says on how many nodes callers hear the
    current music, and the state is ``live`` only once that is all of them (``publishing`` before)."""
    settings, publications = request.app[SETTINGS], request.app[PUBLICATIONS]
    moving = publications.tracked(tenant_id) is not None  # before the read: see below
    tenant, live = await in_thread(request, read_state, settings, request.app[READER], request.app[VIEW], tenant_id)
    live_on = total = 0
    if NODES in request.app:
        version = tenant.version if tenant.setting is MohSetting.FILE else None
        live_on, total = await in_thread(
            request, request.app[NODES].live_on, settings.class_prefix + tenant_id, version
        )
    status = publications.tracked(tenant_id)
    if status is None and total:  # a cluster: the nodes' agents publish; live once every node plays it
        status = Status(State.LIVE if live_on == total else State.PUBLISHING)
    elif status is None and not live and moving:
        # a publication ended while the truth was being read: what was read may predate it, and
        # starting another would publish twice; the next read says whether it is live
        status = Status(State.PUBLISHING)
    elif status is None:
        status = Status(State.LIVE) if live else publications.start(tenant_id)
    body = tenant_body(tenant, settings, status)
    if total:  # once agents report: a cluster
        body["status"]["nodes"] = {"live": live_on, "of": total}
    return body


async def get_moh(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/moh``."""
    _, tenant = await authorised_tenant(request)
    return web.json_response(await current(request, tenant))


@dataclass(frozen=True)
class Spooled:
    """An upload received to a temporary file, with its form fields."""

    path: Path
    filename: str
    accepted: bool  # the ``disclaimer`` part said ``accepted``
    disclaimer_version: str | None  # the ``disclaimer_version`` part, if sent


async def spool_upload(request: web.Request, limit: int) -> Spooled:
    """Stream the multipart body's ``file`` part to a temporary file, at most ``limit`` bytes
    (never the whole body in memory), and read the small ``disclaimer`` fields."""
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise ApiError(413, "too_large", f"the file is larger than the limit of {limit:,} bytes")
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError, HttpProcessingError) as exc:
        raise ApiError(400, "malformed_multipart", f"the body is not multipart/form-data ({exc})") from None
    fd, name = tempfile.mkstemp(dir=request.app[INCOMING])
    path, filename, accepted, version, size = Path(name), "upload", False, None, 0
    other = 0  # bytes of every part but the audio: bounded too, whatever their names
    seen_file = False

    async def drain(part: BodyPartReader) -> bytes:
        nonlocal other
        head = b""
        while chunk := await part.read_chunk(8192):
            other += len(chunk)
            if other > MULTIPART_SLACK:
                raise ApiError(413, "too_large", f"the form fields besides the file pass {MULTIPART_SLACK:,} bytes")
            head = (head + chunk)[:256]
        return head

    try:
        with os.fdopen(fd, "wb") as out:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "malformed_multipart", "nested multipart is not accepted")
                if part.name in ("disclaimer", "disclaimer_version"):
                    value = (await drain(part))[:64].decode(errors="replace").strip()
                    if part.name == "disclaimer":
                        accepted = value == "accepted"
                    else:
                        version = value
                elif part.name == "file":
                    if seen_file:
                        raise ApiError(400, "malformed_multipart", "one file per upload: the body has two file parts")
                    seen_file = True
                    filename = part.filename or "upload"
                    while chunk := await part.read_chunk(64 * 1024):
                        size += len(chunk)
                        if size > limit:
                            raise ApiError(413, "too_large", f"the file is larger than the limit of {limit:,} bytes")
                        out.write(chunk)
                else:
                    await drain(part)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        path.unlink(missing_ok=True)
        raise ApiError(
            400,
            "malformed_multipart",
            "the multipart body is malformed: " + printable(getattr(exc, "message", None) or exc, 80),
        ) from None
    except BaseException:  # too large, timed out (cancelled), client gone: leave nothing behind
        path.unlink(missing_ok=True)
        raise
    return Spooled(path, filename, accepted, version)


def _upload(settings: Settings, tenant: str, spooled: Spooled, by: str) -> None:
    with service_session(settings) as service:
        service.upload(
            tenant,
            spooled.path,
            accept_disclaimer=True,
            accepted_by=by,
            original_name=spooled.filename,
            disclaimer_version=disclaimer.VERSION,
        )


def _delete(settings: Settings, tenant: str) -> None:
    with service_session(settings) as service:
        service.delete(tenant)


async def put_moh(request: web.Request) -> web.StreamResponse:
    """``PUT /tenants/{tenant}/moh``: multipart ``file`` + ``disclaimer=accepted``."""
    who, tenant = await authorised_tenant(request)
    settings, publications = request.app[SETTINGS], request.app[PUBLICATIONS]
    try:
        async with asyncio.timeout(settings.http_body_timeout_s):
            spooled = await spool_upload(request, settings.max_upload_bytes)
    except TimeoutError:
        response = error_response(
            ApiError(408, "timeout", f"the upload did not arrive within {settings.http_body_timeout_s:g} s")
        )
        response.force_close()
        return response
    except ApiError as exc:
        response = error_response(exc)
        response.force_close()  # the rest of an oversized body is not read
        return response
    try:
        if not spooled.accepted:
            raise DisclaimerRequired(
                "the rights disclaimer must be accepted (part disclaimer=accepted):"
                " confirm you hold the rights to play this file to callers; nothing was stored"
            )
        if spooled.disclaimer_version not in (None, disclaimer.VERSION):
            raise ApiError(
                409,
                "disclaimer_changed",
                "the disclaimer's text has changed since it was shown"
                f" (version {disclaimer.VERSION}): read it again; nothing was stored",
            )
        publications.converting(tenant)
        try:
            await in_thread(request, _upload, settings, tenant, spooled, who.actor, pool=WORKERS)
        except BaseException:
            publications.forget(tenant)
            raise
    finally:
        spooled.path.unlink(missing_ok=True)
    publications.start(tenant)
    return web.json_response(await current(request, tenant), status=201)


async def delete_moh(request: web.Request) -> web.Response:
    """``DELETE /tenants/{tenant}/moh``: back to the default music."""
    _, tenant = await authorised_tenant(request)
    await in_thread(request, _delete, request.app[SETTINGS], tenant, pool=WORKERS)
    request.app[PUBLICATIONS].start(tenant)
    return web.Response(status=204)


def _audio_source(reader: Catalog, blobs: Blobs, tenant_id: str) -> Path:
    tenant = reader.get(tenant_id)
    if tenant is None or tenant.setting is not MohSetting.FILE:
        raise NoTenantFile("this tenant uses the default music: there is no uploaded file")
    return blobs.locate(tenant.rendition("sln16").sha256)


def wav_header(data_bytes: int, rate: int = 16000) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV holding ``data_bytes``."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> (first, last) inclusive; None: whole file;
    ``ApiError`` 416 when it cannot be satisfied."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first_s, dash, last_s = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        return None  # not a single byte range: answer the whole file, as RFC 9110 allows
    try:
        if first_s == "":
            first, last = max(0, size - int(last_s)), size - 1
        else:
            first, last = int(first_s), min(int(last_s), size - 1) if last_s else size - 1
    except ValueError:
        return None
    if first > last or first >= size:
        raise ApiError(416, "range_not_satisfiable", f"the audio has {size} bytes")
    return first, last


async def get_audio(request: web.Request) -> web.StreamResponse:
    """``GET /tenants/{tenant}/moh/audio``: what callers hear (16 kHz WAV), with Range support."""
    _, tenant = await authorised_tenant(request)
    source = await in_thread(request, _audio_source, request.app[READER], request.app[BLOBS], tenant)
    data_bytes = source.stat().st_size
    header = wav_header(data_bytes)
    size = len(header) + data_bytes
    wanted = parse_range(request.headers.get("Range"), size)
    first, last = wanted or (0, size - 1)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.content_type = "audio/wav"
    response.headers["Accept-Ranges"] = "bytes"
    response.content_length = last - first + 1
    if wanted:
        response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    await response.prepare(request)
    if first < len(header):
        await response.write(header[first : last + 1])
    with open(source, "rb") as fh:  # an immutable blob; reads of 64 KiB do not stall the loop
        position = max(first, len(header)) - len(header)
        fh.seek(position)
        remaining = last + 1 - len(header) - position
        while remaining > 0:
            chunk = fh.read(min(65536, remaining))
            if not chunk:
                break
            await response.write(chunk)
            remaining -= len(chunk)
    await response.write_eof()
    return response


async def private_answers(request: web.Request, response: web.StreamResponse) -> None:
    """API answers are a tenant's own data: never kept by a shared cache, never sniffed."""
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "private, no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Vary", "Authorization, Cookie")


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers."""
    return web.json_response({"status": "ok"})


async def catalog_problem(app: web.Application) -> str | None:
    """Why the server is not ready (its catalog does not answer a read), or None."""
    return await app[PROBE].problem()


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 while the catalog answers, else 503 and why."""
    return health.readiness_response(await catalog_problem(request.app))


async def metrics_page(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus' text format (no tenant in any label)."""
    return health.metrics_response()


async def openapi(request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json``."""
    return web.json_response(OPENAPI)


async def _lifecycle(app: web.Application) -> Any:
    settings = app[SETTINGS]
    incoming = settings.home / "incoming"  # not blobs/tmp: the blob clean-up empties that one
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    app[INCOMING] = incoming
    app[READER] = open_catalog(settings, writable=False)
    app[BLOBS] = open_blobs(settings, writable=False)
    app[VIEW] = Syncer(settings, app[READER], app[BLOBS], ari_reload(settings))
    app[CATALOG_THREAD] = ThreadPoolExecutor(1, thread_name_prefix="ooma-moh-catalog")
    app[PROBE] = health.CatalogProbe(app[CATALOG_THREAD], app[READER])
    app[WORKERS] = ThreadPoolExecutor(2, thread_name_prefix="ooma-moh-upload")  # ffmpeg: one per core
    app[SIGN_IN_THREAD] = ThreadPoolExecutor(1, thread_name_prefix="ooma-moh-sign-in")

    def publish(tenant: str) -> None:
        if NODES in app and app[NODES].count():  # a cluster: the nodes' agents publish, not this host
            return
        with service_session(settings) as service:
            build_syncer(settings, service).run([tenant])

    app[PUBLICATIONS] = Publications(app[WORKERS], publish)
    if settings.database_url:
        from ..storage.nodes import NodeRegistry

        app[NODES] = NodeRegistry(settings.database_url)
    yield
    await app[PUBLICATIONS].drain()
    app[WORKERS].shutdown(wait=True)
    app[SIGN_IN_THREAD].shutdown(wait=True)
    app[CATALOG_THREAD].shutdown(wait=True)
    with contextlib.suppress(OomaMohError):
        app[READER].close()
    if NODES in app:
        app[NODES].close()


def make_app(settings: Settings) -> web.Application:
    """The API application for ``settings`` (its catalog must exist: ``ooma-moh init``)."""
    app = web.Application(middlewares=[errors_as_json])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_lifecycle)
    app.on_response_prepare.append(private_answers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/tenants/{tenant}/moh", get_moh)
    app.router.add_put("/api/v1/tenants/{tenant}/moh", put_moh)
    app.router.add_delete("/api/v1/tenants/{tenant}/moh", delete_moh)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/audio", get_audio)
    page.add_routes(app)
    return app
