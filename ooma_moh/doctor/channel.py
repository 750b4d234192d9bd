"""Doctor's probe channel: an ARI external media channel of doctor's own, in a temporary Stasis
application (``ooma-moh-doctor-<pid>``), whose audio arrives as RTP (slin16) on a local UDP port.
On it doctor evaluates dialplan functions (``REALTIME()``) and has Asterisk play a class. The
channel, the application's WebSocket and the UDP port are closed when it is left."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..ari.client import AriClient
from ..config import Settings
from ..errors import AriRequestFailed, AsteriskError, OomaMohError

ARI_TIMEOUT_S = 5.0
#: How long the probe call listens to what Asterisk plays.
LISTEN_S = 1.5


@dataclass
class RtpSink(asyncio.DatagramProtocol):
    """Collects RTP payloads by sequence number."""

    packets: dict[int, bytes] = field(default_factory=dict)

    def datagram_received(self, data: bytes, _addr: Any) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= offset + 4:  # header extension
            offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        self.packets[int.from_bytes(data[2:4], "big")] = data[offset:]

    def audio(self) -> bytes:
        """The payloads in sequence order (a short capture: no wrap-around handling needed
        beyond starting at the lowest number after a wrap)."""
        seqs = sorted(self.packets)
        if seqs and seqs[-1] - seqs[0] > 30000:  # wrapped during the capture
            seqs = sorted(seqs, key=lambda s: (s < 30000, s))
        return b"".join(self.packets[s] for s in seqs)


def _local_address(host: str, port: int) -> tuple[int, str]:
    """(address family, this host's address that reaches ``host``) — where Asterisk can send RTP."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)
        return family, probe.getsockname()[0]


class ProbeChannel:
    """An ARI external media channel of doctor's own, in a temporary Stasis application, whose
    audio arrives as RTP (slin16) on a local UDP port."""

    def __init__(self, ari: AriClient, settings: Settings) -> None:
        self.ari = ari
        self.settings = settings
        self.app = f"ooma-moh-doctor-{os.getpid()}"
        self.sink = RtpSink()
        self.channel_id = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> ProbeChannel:
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self) -> None:
        parts = urlsplit(self.settings.ari_url)
        family, address = _local_address(parts.hostname or "127.0.0.1", parts.port or 80)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, 0))
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self.sink, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        port = sock.getsockname()[1]
        host = f"[{address}]" if family == socket.AF_INET6 else address
        ws_url = self.ari.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            self._ws = await self.ari.session.ws_connect(f"{ws_url}/events?app={self.app}&subscribeAll=false")
        except (aiohttp.ClientError, OSError) as exc:
            raise AsteriskError(f"the ARI events WebSocket cannot be opened: {exc}") from None
        await self._registered()
        channel = await self.ari.request(
            "POST",
            "/channels/externalMedia",
            app=self.app,
            external_host=f"{host}:{port}",
            format="slin16",
            encapsulation="rtp",
            transport="udp",
            direction="both",
        )
        self.channel_id = channel["id"]
        await self._wait_event("StasisStart")

    async def _registered(self, wait_s: float = ARI_TIMEOUT_S) -> None:
        """Wait until Asterisk lists the application (it registers it just after the handshake)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                await self.ari.get_application(self.app)
                return
            except AriRequestFailed as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)

    async def _wait_event(self, kind: str, wait_s: float = ARI_TIMEOUT_S) -> None:
        assert self._ws is not None
        deadline = time.monotonic() + wait_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = await self._ws.receive(timeout=remaining)
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                continue
            event = json.loads(message.data)
            if event.get("type") == kind and (event.get("channel") or {}).get("id") == self.channel_id:
                return
        raise AsteriskError(f"doctor's channel did not reach its Stasis application ({kind} missing)")

    async def read(self, expression: str) -> str | None:
        """A dialplan function evaluated on the channel; None when Asterisk cannot evaluate it
        (500; for REALTIME: no row found)."""
        try:
            body = await self.ari.request("GET", f"/channels/{self.channel_id}/variable", variable=expression)
        except AriRequestFailed as exc:
            if exc.status == 500:
                return None
            raise
        return (body or {}).get("value")

    async def listen(self, moh_class: str, seconds: float = LISTEN_S) -> bytes:
        """Start MOH ``moh_class`` on the channel and return the audio received meanwhile
        (big-endian slin16)."""
        self.sink.packets.clear()
        await self.ari.request("POST", f"/channels/{self.channel_id}/moh", mohClass=moh_class)
        await asyncio.sleep(seconds)
        with contextlib.suppress(OomaMohError):
            await self.ari.request("DELETE", f"/channels/{self.channel_id}/moh")
        return self.sink.audio()

    async def close(self) -> None:
        if self.channel_id:
            with contextlib.suppress(OomaMohError):
                await self.ari.request("DELETE", f"/channels/{self.channel_id}")
            self.channel_id = ""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
            self._ws = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
