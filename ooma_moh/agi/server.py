"""``ooma-moh serve agi``: an asyncio FastAGI server for the ``moh`` route.

One coroutine per connection; every read has a timeout, so slow or vanished clients cost a
socket for at most ``io_timeout`` seconds. Catalog lookups run in one worker thread (answers are
cached for a couple of seconds), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from .protocol import MAX_ENV_LINES, MAX_LINE_BYTES, AgiRequest, AgiResponse, ProtocolError, parse_env_line, parse_response
from ..config import Settings
from ..resolve import ClassResolver
from ..storage import Catalog
from .route import ROUTE, Decision, choose_tenant, decide, needs_variable

log = logging.getLogger(__name__)


class FastAgiServer:
    """Answers ``agi://host:port/moh`` requests."""

    def __init__(self, resolver: ClassResolver, *, io_timeout: float = 5.0) -> None:
        self.resolver = resolver
        self.io_timeout = io_timeout
        self.handled = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ooma-moh-catalog")
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_LINE_BYTES, backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening and release the worker thread."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._executor.shutdown(wait=False)

    async def _readline(self, reader: asyncio.StreamReader) -> str:
        raw = await asyncio.wait_for(reader.readline(), self.io_timeout)
        if not raw:
            raise ConnectionError("client closed the connection")
        return raw.decode("utf-8", errors="replace")

    async def _read_env(self, reader: asyncio.StreamReader) -> dict[str, str]:
        env: dict[str, str] = {}
        for _ in range(MAX_ENV_LINES):
            entry = parse_env_line(await self._readline(reader))
            if entry is None:
                return env
            env[entry[0]] = entry[1]
        raise ProtocolError("environment block too long")

    async def _command(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> AgiResponse:
        writer.write(line.encode())
        await asyncio.wait_for(writer.drain(), self.io_timeout)
        response = parse_response(await self._readline(reader))
        if response.code == 511:  # HANGUP, or "Command Not Permitted on a dead channel"
            raise ConnectionError("the channel hung up")
        return response

    async def _decide(self, request: AgiRequest, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> Decision:
        if request.script.split("/")[-1] != ROUTE:
            return Decision(None, "none", "default", f"unknown route {request.script!r}")
        variable = None
        if command := needs_variable(request):
            response = await self._command(reader, writer, command)
            variable = response.data if response.ok and response.result == "1" else None
        tenant, source = choose_tenant(request, variable)
        resolved = None
        if tenant is not None:
            resolved = self.resolver.cached(tenant)
            if resolved is None:
                loop = asyncio.get_running_loop()
                resolved = await loop.run_in_executor(self._executor, self.resolver.resolve, tenant)
        return decide(tenant, source, resolved)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        peer = writer.get_extra_info("peername")
        decision = None
        try:
            request = AgiRequest.from_env(await self._read_env(reader))
            decision = await self._decide(request, reader, writer)
            for line in decision.commands():
                if not (await self._command(reader, writer, line)).ok:
                    break
        except (ProtocolError, ValueError) as exc:
            log.warning("agi %s: not an AGI request: %s", peer, exc)
        except asyncio.TimeoutError:
            log.warning("agi %s: timed out after %.1f s", peer, self.io_timeout)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("agi %s: connection lost: %s", peer, exc)
        finally:
            writer.close()
            self.handled += 1
        if decision is not None:
            log.info("agi moh tenant=%s source=%s class=%s%s in %.1f ms", decision.tenant, decision.source,
                     decision.moh_class, f" fallback={decision.reason!r}" if decision.reason else "",
                     (time.perf_counter() - started) * 1000)


async def run_fastagi(settings: Settings, catalog: Catalog) -> None:
    """``ooma-moh serve agi``: serve on ``settings.agi_listen`` until SIGTERM/SIGINT."""
    server = FastAgiServer(ClassResolver(catalog, settings.class_prefix))
    host, port = settings.agi_address
    bound = await server.start(host, port)
    log.info("FastAGI listening on %s:%d", host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve_forever(), name="fastagi")
    try:
        await stop.wait()
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await server.close()
        log.info("FastAGI stopped after %d requests", server.handled)
