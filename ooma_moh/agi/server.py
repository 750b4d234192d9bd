"""``ooma-moh serve agi``: an asyncio FastAGI server for the ``moh`` route.

One coroutine per connection, and what one connection may cost is bounded: at most
``max_connections`` are served at once (more are closed at once), every read has a timeout
(``io_timeout``), the whole connection a ``deadline``, and the environment block a byte budget
(``max_env_bytes``). Catalog lookups run in one worker thread (answers are cached for a couple of
seconds), never on the event loop. Text from the peer is logged only through :mod:`.logsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from time import monotonic

from .. import health, metrics
from ..config import Settings
from ..lifetime import serve_until_stopped
from ..logsafe import logfmt, printable
from ..model import DEFAULT_CLASS
from ..resolve import ClassResolver, class_of
from .batch import CatalogBatches
from .clock import ConnectionClock
from .protocol import (
    MAX_ENV_LINES,
    MAX_LINE_BYTES,
    AgiRequest,
    AgiResponse,
    ProtocolError,
    parse_env_line,
    parse_response,
)
from .route import ROUTE, Decision, choose_tenant, decide, needs_variable

log = logging.getLogger(__name__)

# Asterisk's block is ~25 agi_* lines, about 1 KB, plus one line per AGI() argument; 16 KiB leaves
# room for long arguments and caps what a connection can make us hold (200 lines x 8 KiB before).
DEFAULT_MAX_ENV_BYTES = 16 * 1024
# Each connection costs its buffers and (budget-bound) environment; 256 at once is far above what
# one Asterisk asks for (a request takes ~1 ms) and keeps the worst case to a few MB.
DEFAULT_MAX_CONNECTIONS = 256
# A request is three round trips and a cached lookup; the per-read timeout alone would let a peer
# sending a line every few seconds keep a slot for MAX_ENV_LINES reads.
DEFAULT_DEADLINE_S = 30.0
# A flood of refused connections gives one log line per interval, not one per connection.
REFUSAL_LOG_INTERVAL_S = 10.0
# A cached answer past this part of the resolver's cache time is read again in the background: a
# tenant called at least that often never waits on a catalog read (a thread hop, ~0.1-0.3 ms).
REFRESH_AT = 0.75
# Kernel receive buffer of each connection (set on the listener, inherited on accept). asyncio reads
# up to 256 KiB per recv before the StreamReader can pause, so a peer stuffing its socket made each
# connection hold that much; a request is ~1 KB, and this bounds the read to the buffer.
RECEIVE_BUFFER_BYTES = 16 * 1024


class FastAgiServer:
    """Answers ``agi://host:port/moh`` requests.

    ``io_timeout`` bounds each read and write, ``deadline`` a whole connection; ``max_env_bytes``
    the environment block (its blank line included); ``max_connections`` how many are served at
    once. ``handled``, ``refused`` and ``active`` count connections served, closed over the cap,
    and being served.
    """

    def __init__(
        self,
        resolver: ClassResolver,
        *,
        io_timeout: float = 5.0,
        deadline: float = DEFAULT_DEADLINE_S,
        max_env_bytes: int = DEFAULT_MAX_ENV_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if io_timeout <= 0 or deadline <= 0 or max_env_bytes < 1 or max_connections < 1:
            raise ValueError("io_timeout and deadline must be > 0, max_env_bytes and max_connections >= 1")
        self.resolver = resolver
        self.refresh_after_s = resolver.cache_s * REFRESH_AT
        self.io_timeout = io_timeout
        self.deadline = deadline
        self.max_env_bytes = max_env_bytes
        self.max_connections = max_connections
        self.handled = 0
        self.refused = 0
        self.active = 0
        self._unlogged_refusals = 0
        self._refusal_timer: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ooma-moh-catalog")
        self._catalog_reads = CatalogBatches(self._executor)
        self._probe = health.CatalogProbe(self._executor, resolver.check_catalog)
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0). ``OomaMohError`` (one line, naming
        ``agi_listen``) if it cannot: the port taken, a privileged port, an unknown host."""
        try:
            self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_LINE_BYTES, backlog=1024)
        except OSError as exc:
            raise health.cannot_listen("agi_listen", (host, port), exc) from None
        for listener in self._server.sockets:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        return int(self._server.sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening, log refusals not yet logged, release the worker thread."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
        self._log_refusals(final=True)
        self._executor.shutdown(wait=False)

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self.refused += 1
        metrics.AGI_REQUESTS.labels("refused").inc()
        self._unlogged_refusals += 1
        if self._refusal_timer is None:
            self._log_refusals()

    def _log_refusals(self, final: bool = False) -> None:
        """Log the refusals counted since the last line; then, unless ``final``, stay quiet for
        REFUSAL_LOG_INTERVAL_S (the next line then sums up that interval)."""
        self._refusal_timer = None
        if not self._unlogged_refusals:
            return
        log.warning(
            "agi: refused %d connection(s) over max_connections=%d (one such line per %.0f s at most)",
            self._unlogged_refusals,
            self.max_connections,
            REFUSAL_LOG_INTERVAL_S,
        )
        self._unlogged_refusals = 0
        if not final:
            self._refusal_timer = asyncio.get_running_loop().call_later(REFUSAL_LOG_INTERVAL_S, self._log_refusals)

    async def catalog_problem(self) -> str | None:
        """For ``/readyz``: None if the catalog answers a read (in the catalog thread), else how
        holds are served without it (:func:`~ooma_moh.health.hold_readiness`)."""
        return await health.hold_readiness(self.resolver, self._probe)

    async def _read_env(self, reader: asyncio.StreamReader, clock: ConnectionClock) -> dict[str, str]:
        env: dict[str, str] = {}
        left = self.max_env_bytes
        for _ in range(MAX_ENV_LINES):
            clock.since = monotonic()
            raw = await reader.readline()
            if not raw:
                raise ConnectionError("client closed the connection")
            left -= len(raw)
            if left < 0:
                raise ProtocolError(f"environment block over {self.max_env_bytes} bytes")
            entry = parse_env_line(raw.decode("utf-8", errors="replace"))
            if entry is None:
                clock.since = None
                return env
            env[entry[0]] = entry[1]
        raise ProtocolError("environment block too long")

    @staticmethod
    async def _command(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, clock: ConnectionClock, line: bytes
    ) -> AgiResponse:
        """Send one command line, read its response (at most ``io_timeout`` for each)."""
        writer.write(line)
        clock.since = monotonic()
        await writer.drain()
        clock.since = monotonic()
        raw = await reader.readline()
        clock.since = None
        if not raw:
            raise ConnectionError("client closed the connection")
        response = parse_response(raw.decode("utf-8", errors="replace"))
        if response.code == 511:  # HANGUP, or "Command Not Permitted on a dead channel"
            raise ConnectionError("the channel hung up")
        return response

    async def _decide(
        self, request: AgiRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, clock: ConnectionClock
    ) -> Decision:
        if request.script.rpartition("/")[2] != ROUTE:  # quoted, not repr'd: the log line escapes it
            return Decision(None, "none", DEFAULT_CLASS, f"unknown route '{request.script}'")
        variable = None
        if command := needs_variable(request):
            response = await self._command(reader, writer, clock, command.encode())
            variable = response.data if response.ok and response.result == "1" else None
        tenant, source = choose_tenant(request, variable)
        resolved = None
        if tenant is not None:  # a fresh cached answer costs no thread hop (class_of)
            resolved = await class_of(self.resolver, tenant, self._catalog_reads, self.refresh_after_s)
        return decide(tenant, source, resolved)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # No await before the count changes, so the check and the increment cannot interleave.
        if self.active >= self.max_connections:
            self._refuse(writer)
            return
        self.active += 1
        try:
            await self._serve(reader, writer)
        finally:
            self.active -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        decision = request = None
        result = "ok"
        clock = ConnectionClock(self.io_timeout, self.deadline)
        try:
            async with clock:
                request = AgiRequest.from_env(await self._read_env(reader, clock))
                decision = await self._decide(request, reader, writer, clock)
                for line in decision.lines():
                    if not (await self._command(reader, writer, clock, line)).ok:
                        break
        except (ProtocolError, ValueError) as exc:
            result = "bad_request"
            log.warning("agi %s: not an AGI request: %s", writer.get_extra_info("peername"), printable(exc))
        except TimeoutError:
            result = "timeout"
            peer = writer.get_extra_info("peername")
            if clock.expired == "deadline":
                log.warning("agi %s: not done within the %.1f s deadline", peer, self.deadline)
            else:
                log.warning("agi %s: timed out after %.1f s", peer, self.io_timeout)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            result = "hung_up"
            log.info("agi %s: connection lost: %s", writer.get_extra_info("peername"), printable(exc))
        finally:
            writer.close()
            self.handled += 1
        # The bookkeeping waits for the next turn of the loop: the close queued just above runs
        # first, so Asterisk has its EOF (and the dialplan goes on) before the log line is written.
        asyncio.get_running_loop().call_soon(self._done, request, decision, result, time.perf_counter() - started)

    @staticmethod
    def _done(request: AgiRequest | None, decision: Decision | None, result: str, elapsed: float) -> None:
        """A request is over: its metrics and its log line."""
        metrics.agi_request(result, elapsed)
        if decision is None:
            return
        if decision.reason:
            metrics.fallback("agi", decision.reason)
        assert request is not None
        if log.isEnabledFor(logging.INFO):
            env = request.env
            log.info(
                "agi moh tenant=%s source=%s class=%s%s in %.1f ms result=%s channel=%s uniqueid=%s",
                logfmt(decision.tenant),
                decision.source,
                logfmt(decision.moh_class),
                f" fallback={logfmt(decision.reason)}" if decision.reason else "",
                elapsed * 1000,
                result,
                logfmt(env.get("agi_channel", "")),
                logfmt(env.get("agi_uniqueid", "")),
            )


async def run_fastagi(settings: Settings, resolver: ClassResolver) -> None:
    """``ooma-moh serve agi``: serve on ``settings.agi_listen`` until SIGTERM/SIGINT."""
    server = FastAgiServer(
        resolver,
        deadline=settings.agi_deadline_s,
        max_env_bytes=settings.agi_max_env_bytes,
        max_connections=settings.agi_max_connections,
    )
    host, port = settings.agi_address
    try:
        bound = await server.start(host, port)
    except BaseException:
        await server.close()  # the catalog thread
        raise
    exporter, maddress = None, settings.metrics_address
    if maddress is not None:
        try:
            exporter, mport = await health.start_server(maddress, server.catalog_problem)
        except BaseException:
            await server.close()
            raise
    # logged once every listener is open: a failure to open one is the command's only line
    log.info("FastAGI listening on %s:%d", host, bound)
    if exporter is not None and maddress is not None:
        log.info("metrics on %s:%d (/metrics, /healthz, /readyz)", maddress[0], mport)
    serving = asyncio.create_task(server.serve_forever(), name="fastagi")
    try:
        await serve_until_stopped()
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await server.close()
        if exporter is not None:
            await exporter.cleanup()
        log.info("FastAGI stopped after %d requests (%d refused over max_connections)", server.handled, server.refused)
