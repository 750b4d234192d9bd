"""The small HTTP server of a long-running process (``metrics_listen``; docs/operations.md):
``/metrics`` (:mod:`ooma_moh.metrics`), ``/healthz`` (alive) and ``/readyz`` (ready, or why not,
on one line), and the catalog probe behind ``/readyz``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

from .errors import OomaMohError
from .logsafe import printable
from .metrics import CONTENT_TYPE, exposition

if TYPE_CHECKING:
    from aiohttp import web

    from .resolve import ClassResolver
    from .storage import Blobs, Catalog

#: what makes the process not ready, as one line, or None when it is ready
Readiness = Callable[[], Awaitable[str | None]]

#: the blob the blob store probe looks for (never stored: the lookup only proves the store answers)
_PROBE_BLOB = "0" * 64
#: the endpoint the catalog probe looks up (never mapped: the read only proves the catalog answers)
_PROBE_ENDPOINT = "ooma-moh/readyz"


def probe_catalog(catalog: Catalog) -> str | None:
    """(blocking; in the thread that owns ``catalog``) None if it answers a read, else why not,
    on one line."""
    try:
        catalog.endpoint_tenant(_PROBE_ENDPOINT)
    except OomaMohError as exc:
        return "catalog unreachable: " + printable(exc, 200)
    return None


def probe_blobs(blobs: Blobs) -> str | None:
    """(blocking) None if the blob store answers a lookup, else why not, on one line."""
    try:
        blobs.exists(_PROBE_BLOB)
    except OomaMohError as exc:
        return "blob store unreachable: " + printable(exc, 200)
    return None


class CatalogProbe:
    """``/readyz``'s catalog check (``check``: blocking, None or why not), run in the thread that
    owns the catalog (``executor``). At most one check is in flight: while one is still waiting on
    a hung catalog, later probes wait on it too instead of queueing more reads ahead of the
    requests the thread serves."""

    def __init__(
        self, executor: Executor, check: Callable[[], str | None], timeout: float = 5.0, what: str = "catalog"
    ) -> None:
        self.executor, self.check, self.timeout, self.what = executor, check, timeout, what
        self._pending: asyncio.Future[str | None] | None = None

    @classmethod
    def of(cls, executor: Executor, catalog: Catalog, timeout: float = 5.0) -> CatalogProbe:
        """The probe that reads ``catalog`` (:func:`probe_catalog`)."""
        return cls(executor, lambda: probe_catalog(catalog), timeout)

    async def problem(self) -> str | None:
        """None if the check passes within :attr:`timeout`, else why not."""
        loop = asyncio.get_running_loop()
        if self._pending is None or self._pending.done() or self._pending.get_loop() is not loop:
            self._pending = loop.run_in_executor(self.executor, self.check)
        try:
            return await asyncio.wait_for(asyncio.shield(self._pending), self.timeout)
        except TimeoutError:
            return f"{self.what} unreachable: no answer within {self.timeout:g} s"


def metrics_response() -> web.Response:
    """``GET /metrics``."""
    from aiohttp import web

    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE})


class Degraded(str):
    """A readiness answer that is not a problem: the process serves, in a degraded mode (what
    it says). ``/readyz`` answers 200 ``ready, degraded: …``."""


async def hold_readiness(resolver: ClassResolver, probe: CatalogProbe) -> str | None:
    """``/readyz``'s catalog part for a hold path (``serve ari``, ``serve agi``): None while the
    catalog answers (``probe``, checking ``resolver.check_catalog``); else :class:`Degraded` — holds
    are served from this node's published classes, said with how many and how old."""
    problem = await probe.problem()
    if problem is None:
        return None
    resolver.catalog_failed_at_once(problem)  # a hung check says so only here
    return Degraded(await asyncio.to_thread(resolver.degraded) or problem)


def readiness_response(problem: str | None) -> web.Response:
    """``GET /readyz``: 200 ``ready`` (or ``ready, degraded: …``), or 503 and the reason."""
    from aiohttp import web

    if isinstance(problem, Degraded):
        return web.Response(text=f"ready, degraded: {problem}\n", status=200)
    return web.Response(text=f"{problem}\n" if problem else "ready\n", status=503 if problem else 200)


def make_app(ready: Readiness) -> web.Application:
    """The metrics and health application."""
    from aiohttp import web

    async def metrics(_request: web.Request) -> web.Response:
        return metrics_response()

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        return readiness_response(await ready())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def cannot_listen(setting: str, address: tuple[str, int], exc: OSError) -> OomaMohError:
    """The one-line error for a listener that cannot be opened on ``address`` (the port taken, a
    privileged port, a host name that does not resolve), naming the ``setting`` to change."""
    # asyncio's strerror repeats the address; getaddrinfo's errors carry negative codes and a short text
    reason = os.strerror(exc.errno).lower() if exc.errno is not None and exc.errno > 0 else exc.strerror or str(exc)
    return OomaMohError(f"{setting} {address[0]}:{address[1]}: cannot listen ({printable(reason, 200)})")


async def start_server(address: tuple[str, int], ready: Readiness) -> tuple[web.AppRunner, int]:
    """Serve the metrics application on ``address`` in the running loop; (runner, bound port).
    ``await runner.cleanup()`` stops it."""
    from aiohttp import web

    runner = web.AppRunner(make_app(ready), access_log=None)  # scrapes and probes are not worth a line each
    await runner.setup()
    try:
        await web.TCPSite(runner, *address).start()
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen("metrics_listen", address, exc) from None
    ports = [a[1] for a in runner.addresses if isinstance(a, tuple)]
    return runner, ports[0] if ports else address[1]


def serve_in_thread(address: tuple[str, int], ready: Callable[[], str | None]) -> tuple[int, Callable[[], None]]:
    """The metrics server for a process without an event loop (the agent): its own loop in a
    daemon thread. Returns the bound port and a function that stops it."""
    loop = asyncio.new_event_loop()
    started: Future[int] = Future()

    async def readiness() -> str | None:
        return ready()

    def main() -> None:
        try:
            runner, port = loop.run_until_complete(start_server(address, readiness))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(port)
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="ooma-moh-metrics", daemon=True)
    thread.start()
    port = started.result(30)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return port, stop
