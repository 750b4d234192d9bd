"""``ooma-moh serve http``: the API application on ``settings.http_listen`` until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .. import health
from ..app import http_backend
from ..config import Settings
from ..lifetime import serve_until_stopped
from ..logsafe import printable
from .app import catalog_problem, make_app
from .guard import ConnectionGuard, JsonErrors, Limits, fit_descriptor_limit

log = logging.getLogger(__name__)
LOGIN_PATH = re.compile(r"/login/[^/]*")
#: answered every few seconds to a scraper or a probe: a line only when they fail
QUIET_PATHS = frozenset(("/metrics", "/healthz", "/readyz"))
#: the method aiohttp gives the stand-in request of one it could not parse
UNPARSED = "UNKNOWN"


class AccessLogger(AbstractAccessLogger):
    """One line per request (successful scrapes and probes aside); a login link's secret never
    reaches the log."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path in QUIET_PATHS and response.status < 400:
            return
        if request.method == UNPARSED and response.status == 400:  # counted by quiet.MalformedRequests
            return
        path = LOGIN_PATH.sub("/login/...", request.path)
        self.logger.info(
            "%s %s %s %d %.3fs", request.remote, request.method, printable(path, 200), response.status, time
        )


class Listening:
    """A running server: its application's runner, its guarded listener and its port."""

    def __init__(self, runner: web.AppRunner, listener: asyncio.Server, guard: ConnectionGuard) -> None:
        self.runner, self.listener, self.guard = runner, listener, guard
        self.port = int(listener.sockets[0].getsockname()[1])  # the real port when asked for port 0
        self._reporting = asyncio.create_task(guard.tally.report_every(), name="connection-guard")

    async def stop(self) -> None:
        """Stop accepting, let requests in flight and publications finish, close everything."""
        self.listener.close()
        try:
            await self.runner.cleanup()
        finally:
            self._reporting.cancel()
            await asyncio.gather(self._reporting, return_exceptions=True)  # its last line said
            await self.listener.wait_closed()


async def listen(app: web.Application, guard: ConnectionGuard, settings: Settings) -> Listening:
    """Serve ``app`` (made with ``guard.middleware``) on ``settings.http_address`` behind ``guard``.
    ``OomaMohError`` naming ``http_listen`` if it cannot listen."""
    handler_args: dict[str, Any] = {
        "access_log": log,
        "access_log_class": AccessLogger,
        "keepalive_timeout": settings.http_idle_timeout_s,
    }
    runner = web.AppRunner(app, shutdown_timeout=10.0, **handler_args)
    await runner.setup()
    server, loop = runner.server, asyncio.get_running_loop()
    assert server is not None
    host, port = settings.http_address
    try:
        listener = await guard.listen(lambda: JsonErrors(server, loop=loop, **handler_args), host, port)
    except OSError as exc:  # the port taken, a privileged port, an unknown host: one line, not a traceback
        await runner.cleanup()
        raise health.cannot_listen("http_listen", (host, port), exc) from None
    except BaseException:
        await runner.cleanup()
        raise
    return Listening(runner, listener, guard)


async def start_http(settings: Settings) -> Listening:
    """Start serving (``await listening.stop()`` to stop)."""
    guard = ConnectionGuard(fit_descriptor_limit(Limits.of(settings)))
    return await listen(make_app(http_backend(settings), guard.middleware), guard, settings)


async def run_http(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; requests in flight and publications finish first."""
    listening = await start_http(settings)
    port, app = listening.port, listening.runner.app
    exporter, maddress = None, settings.metrics_address
    if maddress is not None:
        try:
            exporter, mport = await health.start_server(maddress, lambda: catalog_problem(app))
        except BaseException:
            await listening.stop()
            raise
    # logged once every listener is open: a failure to open one is the command's only line
    log.info("HTTP API listening on %s:%d (/metrics, /healthz, /readyz too)", settings.http_address[0], port)
    if exporter is not None and maddress is not None:
        log.info("metrics on %s:%d (/metrics, /healthz, /readyz)", maddress[0], mport)
    try:
        await serve_until_stopped()
    finally:
        if exporter is not None:
            await exporter.cleanup()
        await listening.stop()
        log.info("HTTP API stopped")
