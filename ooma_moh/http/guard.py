"""Connections before they are requests: bounded in number and in time (slowloris, floods).

When a connection opens, in order:

1. its client address already has ``http_max_connections_per_client`` open (0: no such cap) →
   refused: a ``503`` with ``Retry-After`` is written and the connection closed;
2. the server has ``http_max_connections`` open → the oldest connection with no request in
   progress (idle between requests, or still sending its headers) is closed to make room; when
   every one is in a request, the new one is refused as in 1;
3. otherwise it is served.

A served connection is closed when it takes more than ``http_header_timeout_s`` from the first
byte of a request to the end of its headers, or stays ``http_idle_timeout_s`` with no request
(aiohttp's keep-alive timeout, which also covers a connection that never sends a byte). A body has
``http_body_timeout_s`` (:mod:`.api`). Refusals, evictions and timeouts are counted and said in one
INFO line per minute (:class:`~.quiet.Tally`), never one line per connection.

Requests aiohttp cannot parse are answered in the API's JSON error shape (:class:`JsonErrors`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..config import Settings
from ..logsafe import printable
from .quiet import Tally

log = logging.getLogger(__name__)
#: descriptors besides the connections' (catalog, blobs, ffmpeg's pipes, logs, the listener)
SPARE_DESCRIPTORS = 256


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


REFUSAL_BODY = _error_body("too_many_connections", "the server has too many connections open: try again")
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(REFUSAL_BODY), REFUSAL_BODY)
)


@dataclass(frozen=True)
class Limits:
    """The guard's bounds (settings ``http_*``)."""

    max_connections: int
    per_client: int  # 0: none
    header_timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.http_max_connections, settings.http_max_connections_per_client, settings.http_header_timeout_s
        )

    def descriptors(self) -> int:
        """What the process needs: each connection's socket, and a spool file for an upload."""
        return 2 * self.max_connections + SPARE_DESCRIPTORS


def fit_descriptor_limit(limits: Limits) -> Limits:
    """Raise this process' soft ``RLIMIT_NOFILE`` to what ``limits`` need (up to the hard limit);
    if even the hard limit is too low, fewer connections, said in one WARNING."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = limits.descriptors()
    ceiling = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    if ceiling >= need:
        return limits
    fewer = max(1, (ceiling - SPARE_DESCRIPTORS) // 2)
    log.warning(
        "http_max_connections %d needs %d file descriptors but the hard limit is %d: serving at most %d"
        " connections (raise LimitNOFILE)",
        limits.max_connections,
        need,
        hard,
        fewer,
    )
    return Limits(fewer, min(limits.per_client, fewer), limits.header_timeout_s)


class JsonErrors(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse in the API's error shape
    (it is still logged by aiohttp, and counted by :class:`~.quiet.MalformedRequests`)."""

    __slots__ = ()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)
        if status >= 500:
            return plain
        said = printable(getattr(exc, "message", None) or message or "", 120)
        answer = web.Response(
            status=status,
            body=_error_body("malformed_request", f"the request is not valid HTTP: {said}"),
            content_type="application/json",
        )
        answer.force_close()
        return answer


class Connection(asyncio.Protocol):
    """One client connection in front of aiohttp's handler for it, and where it stands."""

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler) -> None:
        self.guard, self.handler = guard, handler
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.served = False  # admitted: the handler has the connection
        self.requests = 0  # requests in progress (a middleware counts them)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self.guard.admit(self):
            transport.write(REFUSAL)
            transport.close()
            return
        self.served = True
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.served:
            return
        if not self.requests and self._header_timer is None:  # a request's first bytes
            self._header_timer = asyncio.get_running_loop().call_later(
                self.guard.limits.header_timeout_s, self._headers_too_slow
            )
        self.handler.data_received(data)

    def eof_received(self) -> None:  # the transport closes (aiohttp's handler keeps nothing half-open)
        if self.served:
            self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self.guard.forget(self)
        if self.served:
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.served:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.served:
            self.handler.resume_writing()

    def request_started(self) -> None:
        self.requests += 1
        self._stop_header_timer()

    def request_ended(self) -> None:
        self.requests -= 1

    def close(self, why: str) -> None:
        """Close it now, counting ``why``."""
        self.guard.tally.add(why)
        self.handler.force_close()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.requests:
            self.close("header timeout")

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


class ConnectionGuard:
    """Every open connection of one server, admitted by the rules of this module."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.tally = Tally("connections refused or closed early")
        self._open: dict[asyncio.BaseTransport, Connection] = {}  # oldest first
        self._per_client: dict[str, int] = {}

    def admit(self, connection: Connection) -> bool:
        """Rules 1-3 of the module's docstring; True if ``connection`` is served."""
        limits, client = self.limits, connection.client
        if limits.per_client and self._per_client.get(client, 0) >= limits.per_client:
            self.tally.add("refused: per-client cap")
            return False
        if len(self._open) >= limits.max_connections:
            idle = next((c for c in self._open.values() if not c.requests), None)
            if idle is None:
                self.tally.add("refused: server full")
                return False
            self.forget(idle)
            idle.close("closed idle for a new one")
        assert connection.transport is not None
        self._open[connection.transport] = connection
        self._per_client[client] = self._per_client.get(client, 0) + 1
        return True

    def forget(self, connection: Connection) -> None:
        if connection.transport is None or self._open.pop(connection.transport, None) is None:
            return
        left = self._per_client[connection.client] - 1
        if left:
            self._per_client[connection.client] = left
        else:
            del self._per_client[connection.client]

    def open_connections(self) -> int:
        return len(self._open)

    def busy_connections(self) -> int:
        """Connections with a request in progress."""
        return sum(1 for c in self._open.values() if c.requests)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Marks the request's connection busy while its handler runs (it is then never evicted
        and its header timer is stopped)."""
        connection = self._open.get(request.transport) if request.transport is not None else None
        if connection is None:
            response: web.StreamResponse = await handler(request)
            return response
        connection.request_started()
        try:
            response = await handler(request)
            return response
        finally:
            connection.request_ended()

    async def listen(self, handlers: Callable[[], RequestHandler], host: str, port: int) -> asyncio.Server:
        """Accept connections on ``host:port``, each served by a handler from ``handlers``."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: Connection(self, handlers()), host, port, reuse_address=True, backlog=1024
        )
