"""The HTTP server's application: its routes, its thread pools and its lifetime, over the
collaborators it is given (:class:`~ooma_moh.http.backend.HttpBackend`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import golive, health
from . import api, audio, drafts, page, stats, testcall
from .backend import HttpBackend
from .context import (
    BACKEND,
    BLOB_PROBE,
    BLOB_THREAD,
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
)
from .openapi import OPENAPI
from .publication import Publications
from .quiet import AIOHTTP_SERVER, MalformedRequests
from .spool import Spool


async def private_answers(request: web.Request, response: web.StreamResponse) -> None:
    """API answers are a tenant's own data: never kept by a shared cache, never sniffed."""
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "private, no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Vary", "Authorization, Cookie")


async def healthz(_request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers."""
    return web.json_response({"status": "ok"})


async def catalog_problem(app: web.Application) -> str | None:
    """Why the server is not ready — its catalog does not answer a read, or its blob store (object
    storage) a lookup: an upload could not be stored — or None."""
    return await app[PROBE].problem() or await app[BLOB_PROBE].problem()


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 while the catalog and the blob store answer, else 503 and why."""
    return health.readiness_response(await catalog_problem(request.app))


async def metrics_page(_request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus' text format (no tenant in any label)."""
    return health.metrics_response()


async def openapi(_request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json``."""
    return web.json_response(OPENAPI)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    backend = app[BACKEND]
    spool = Spool(backend.settings.home / "incoming")  # not blobs/tmp: the blob clean-up empties that one
    app[INCOMING] = spool.open()
    app[CATALOG_THREAD] = ThreadPoolExecutor(1, thread_name_prefix="ooma-moh-catalog")
    app[PROBE] = health.CatalogProbe.of(app[CATALOG_THREAD], backend.reader)
    app[BLOB_THREAD] = ThreadPoolExecutor(1, thread_name_prefix="ooma-moh-blobs")
    blobs = backend.blobs
    app[BLOB_PROBE] = health.CatalogProbe(app[BLOB_THREAD], lambda: health.probe_blobs(blobs), what="blob store")
    app[WORKERS] = ThreadPoolExecutor(2, thread_name_prefix="ooma-moh-upload")  # ffmpeg: one per core
    app[SIGN_IN_THREAD] = ThreadPoolExecutor(1, thread_name_prefix="ooma-moh-sign-in")
    nodes = backend.nodes

    def publish(tenant: str) -> None:
        if golive.publishes_here(nodes.count() if nodes is not None else 0):
            backend.publish(tenant)

    app[PUBLICATIONS] = Publications(app[WORKERS], publish, backend.publish_retry_s)
    malformed = MalformedRequests()
    AIOHTTP_SERVER.addFilter(malformed)
    reporting = asyncio.create_task(malformed.tally.report_every(), name="malformed-requests")
    yield
    reporting.cancel()
    await asyncio.gather(reporting, return_exceptions=True)  # its last line said
    AIOHTTP_SERVER.removeFilter(malformed)
    await app[PUBLICATIONS].drain()
    app[WORKERS].shutdown(wait=True)
    app[SIGN_IN_THREAD].shutdown(wait=True)
    app[CATALOG_THREAD].shutdown(wait=True)
    app[BLOB_THREAD].shutdown(wait=False, cancel_futures=True)
    spool.close()
    backend.close()


def make_app(backend: HttpBackend, *outer: Middleware) -> web.Application:
    """The API and page application over ``backend`` (closed when the application stops), with
    the ``outer`` middlewares (the connection guard's) around its own."""
    app = web.Application(middlewares=[*outer, api.errors_as_json])
    app[BACKEND] = backend
    app[SETTINGS] = backend.settings
    app[READER] = backend.reader
    app[BLOBS] = backend.blobs
    app[VIEW] = backend.view
    if backend.nodes is not None:
        app[NODES] = backend.nodes
    app.cleanup_ctx.append(_lifecycle)
    app.cleanup_ctx.append(testcall.lifecycle)  # after _lifecycle: it uses the catalog thread
    app.on_response_prepare.append(private_answers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/tenants/{tenant}/moh", api.get_moh)
    app.router.add_put("/api/v1/tenants/{tenant}/moh", api.put_moh)
    app.router.add_delete("/api/v1/tenants/{tenant}/moh", api.delete_moh)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/audio", audio.get_audio)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/waveform", audio.get_waveform)
    app.router.add_post("/api/v1/tenants/{tenant}/moh/restore", drafts.post_restore)
    app.router.add_post("/api/v1/tenants/{tenant}/moh/drafts", drafts.post_draft)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/drafts/{draft}", drafts.get_draft)
    app.router.add_delete("/api/v1/tenants/{tenant}/moh/drafts/{draft}", drafts.delete_draft)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/drafts/{draft}/audio", audio.get_draft_audio)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/drafts/{draft}/waveform", audio.get_draft_waveform)
    app.router.add_post("/api/v1/tenants/{tenant}/moh/drafts/{draft}/mix", drafts.post_mix)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/stats", stats.get_stats)
    app.router.add_get("/api/v1/tenants/{tenant}/endpoints", testcall.get_endpoints)
    app.router.add_post("/api/v1/tenants/{tenant}/moh/test-call", testcall.post_test_call)
    app.router.add_get("/api/v1/tenants/{tenant}/moh/test-call/{call}", testcall.get_test_call)
    page.add_routes(app)
    return app
