"""``ooma-moh serve http``: the API application on ``settings.http_listen`` until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .. import health
from ..app import http_backend
from ..config import Settings
from ..lifetime import serve_until_stopped
from ..logsafe import printable
from .app import catalog_problem, make_app

log = logging.getLogger(__name__)
LOGIN_PATH = re.compile(r"/login/[^/]*")
#: answered every few seconds to a scraper or a probe: a line only when they fail
QUIET_PATHS = frozenset(("/metrics", "/healthz", "/readyz"))


class AccessLogger(AbstractAccessLogger):
    """One line per request (successful scrapes and probes aside); a login link's secret never
    reaches the log."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path in QUIET_PATHS and response.status < 400:
            return
        path = LOGIN_PATH.sub("/login/...", request.path)
        self.logger.info(
            "%s %s %s %d %.3fs", request.remote, request.method, printable(path, 200), response.status, time
        )


async def start_http(settings: Settings) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (``await runner.cleanup()`` to stop) and the bound port.
    ``OomaMohError`` naming ``http_listen`` if it cannot listen."""
    app = make_app(http_backend(settings))
    runner = web.AppRunner(app, access_log=log, access_log_class=AccessLogger, shutdown_timeout=10.0)
    await runner.setup()
    host, port = settings.http_address
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:  # the port taken, a privileged port, an unknown host: one line, not a traceback
        await runner.cleanup()
        raise health.cannot_listen("http_listen", (host, port), exc) from None
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:  # the real port when asked for port 0
        if isinstance(address, tuple):
            bound = address[1]
    return runner, bound


async def run_http(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; requests in flight and publications finish first."""
    runner, port = await start_http(settings)
    exporter, maddress = None, settings.metrics_address
    if maddress is not None:
        try:
            exporter, mport = await health.start_server(maddress, lambda: catalog_problem(runner.app))
        except BaseException:
            await runner.cleanup()
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
        await runner.cleanup()
        log.info("HTTP API stopped")
