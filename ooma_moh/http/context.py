"""What every part of the HTTP server shares: the application's keys, the one error type with
an HTTP status, and how blocking work leaves the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from ..ari.testcall import Dialler
from ..config import Settings
from ..health import CatalogProbe
from ..storage import Blobs, Catalog
from .backend import HttpBackend, NodeCounter, PublishedView
from .publication import Publications

#: the collaborators the server was given (its one wiring: ooma_moh.app.http_backend)
BACKEND = web.AppKey("backend", HttpBackend)
SETTINGS = web.AppKey("settings", Settings)
READER = web.AppKey("reader", Catalog)
#: read-only view of what is published and stored, used only in the catalog thread with READER
VIEW = web.AppKey("view", PublishedView)
BLOBS = web.AppKey("blobs", Blobs)
CATALOG_THREAD = web.AppKey("catalog_thread", ThreadPoolExecutor)
WORKERS = web.AppKey("workers", ThreadPoolExecutor)
#: sign-in and sign-out write the catalog: their own thread, so a held lock never stalls reads
SIGN_IN_THREAD = web.AppKey("sign_in_thread", ThreadPoolExecutor)
PUBLICATIONS = web.AppKey("publications", Publications)
INCOMING = web.AppKey("incoming", Path)
#: the cluster's node registry (only with a PostgreSQL catalog), used in the catalog thread
NODES = web.AppKey("nodes", NodeCounter)
#: /readyz's catalog check, in the catalog thread
PROBE = web.AppKey("probe", CatalogProbe)
#: /readyz's blob store check (object storage), in a thread of its own
BLOB_THREAD = web.AppKey("blob_thread", ThreadPoolExecutor)
BLOB_PROBE = web.AppKey("blob_probe", CatalogProbe)
#: "call my phone": the test calls this server places and follows (http/testcall.py)
TEST_CALLS = web.AppKey("test_calls", Dialler)

T = TypeVar("T")


class ApiError(Exception):
    """An error with its HTTP status and code, answered as JSON (with ``headers``: what the status
    requires, such as ``WWW-Authenticate`` on 401)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


async def remembered(
    request: web.Request, kind: str, secret: str, check: Callable[[Catalog, str], T | None]
) -> T | None:
    """``check(reader, secret)`` (a token's or a session's, in the catalog thread), or what it
    found last time while the catalog has not changed since (:mod:`ooma_moh.memview`)."""
    memory = request.app[BACKEND].memory
    if memory is None:
        return await in_thread(request, check, request.app[READER], secret)
    known: T | None = memory.recall_credential(kind, secret)
    if known is not None:
        return known
    ticket = memory.credential_ticket()
    found = await in_thread(request, check, request.app[READER], secret)
    memory.keep_credential(ticket, kind, secret, found)
    return found


async def in_thread(
    request: web.Request, func: Callable[..., T], *args: Any, pool: web.AppKey[Any] = CATALOG_THREAD
) -> T:
    """Run blocking ``func`` in the app's catalog thread (or another pool)."""
    return await asyncio.get_running_loop().run_in_executor(request.app[pool], func, *args)
