"""ARI REST client on aiohttp: one ``ClientSession``, typed errors.

aiohttp's exceptions are translated here and nowhere else: a connection problem becomes
``AsteriskError``, an error status ``AriRequestFailed`` (with ``.status``).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp

from ..errors import AriRequestFailed, AsteriskError


class Ari(Protocol):
    """What the hold handler needs from ARI; :class:`AriClient` over HTTP, a fake in unit tests."""

    async def get_channel(self, channel_id: str) -> dict[str, Any]: ...
    async def list_channels(self) -> list[dict[str, Any]]: ...
    async def get_bridge(self, bridge_id: str) -> dict[str, Any]: ...
    async def list_bridges(self) -> list[dict[str, Any]]: ...
    async def get_variable(self, channel_id: str, name: str) -> str | None: ...
    async def set_variable(self, channel_id: str, name: str, value: str) -> None: ...
    async def start_moh(self, channel_id: str, moh_class: str) -> None: ...
    async def stop_moh(self, channel_id: str) -> None: ...


class AriClient:
    """Calls Asterisk's REST Interface at ``<base_url>/ari``."""

    def __init__(
        self, base_url: str, user: str, password: str, *, timeout: float = 10.0, max_connections: int = 32
    ) -> None:
        """``max_connections`` caps this client's concurrent HTTP connections: Asterisk's HTTP
        server serves at most ``sessionlimit`` (http.conf, default 100) for *every* client
        together, the events WebSocket included, and refuses the rest."""
        self.base_url = base_url.rstrip("/") + "/ari"
        self.max_connections = max_connections
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The process's one HTTP session, created on first use (inside the event loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, connector=aiohttp.TCPConnector(limit=self.max_connections)
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, body: Any = None, **params: Any) -> Any:
        """Send one request (``params`` as query, ``body`` as JSON); the decoded JSON answer,
        or None for an empty one."""
        query = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items() if v is not None}
        try:
            async with self.session.request(method, self.base_url + path, params=query, json=body) as response:
                body = await response.text()
                if response.status >= 400:
                    message = body
                    if response.content_type == "application/json":
                        with contextlib.suppress(ValueError, AttributeError):
                            message = (await response.json()).get("message", body)
                    raise AriRequestFailed(method, path, response.status, message.strip() or response.reason or "")
                if not body:
                    return None
                return await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise AsteriskError(f"cannot reach ARI at {self.base_url}: {exc}") from None
        except TimeoutError:
            raise AsteriskError(f"ARI at {self.base_url} did not answer {method} {path} in time") from None

    async def _object(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        """A request whose answer must be one JSON object."""
        answer = await self.request(method, path, **params)
        if not isinstance(answer, dict):
            raise AsteriskError(f"ARI answered {method} {path} with {type(answer).__name__}, not an object")
        return answer

    async def reload_module(self, module: str) -> None:
        """Reload one Asterisk module (``PUT /asterisk/modules/{module}``)."""
        await self.request("PUT", f"/asterisk/modules/{module}")

    async def get_application(self, app: str) -> dict[str, Any]:
        """``GET /applications/{app}`` (404 when Asterisk has no such application registered)."""
        return await self._object("GET", f"/applications/{app}")

    async def subscribe(self, app: str, event_sources: Sequence[str]) -> dict[str, Any]:
        """``POST /applications/{app}/subscription``: ``channel:`` or ``bridge:`` with no id means
        every channel or bridge, including those other applications own."""
        return await self._object("POST", f"/applications/{app}/subscription", eventSource=",".join(event_sources))

    # -- the calls the hold handler makes ------------------------------------------------------
    async def list_channels(self) -> list[dict[str, Any]]:
        """``GET /channels``."""
        return await self.request("GET", "/channels") or []

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        """``GET /channels/{id}``."""
        return await self._object("GET", f"/channels/{channel_id}")

    async def list_bridges(self) -> list[dict[str, Any]]:
        """``GET /bridges``."""
        return await self.request("GET", "/bridges") or []

    async def get_bridge(self, bridge_id: str) -> dict[str, Any]:
        """``GET /bridges/{id}``."""
        return await self._object("GET", f"/bridges/{bridge_id}")

    async def get_variable(self, channel_id: str, name: str) -> str | None:
        """A channel variable or function (any channel); None if it is not set."""
        try:
            body = await self.request("GET", f"/channels/{channel_id}/variable", variable=name)
        except AriRequestFailed as exc:
            if exc.status == 404 and "variable was not found" in str(exc):
                return None
            raise
        return (body or {}).get("value")

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        """Set a channel variable or function (channel must be in some Stasis application)."""
        await self.request("POST", f"/channels/{channel_id}/variable", variable=name, value=value)

    async def start_moh(self, channel_id: str, moh_class: str) -> None:
        """``POST /channels/{id}/moh``. Note: a set ``CHANNEL(musicclass)`` wins over ``moh_class``."""
        await self.request("POST", f"/channels/{channel_id}/moh", mohClass=moh_class)

    async def stop_moh(self, channel_id: str) -> None:
        """``DELETE /channels/{id}/moh``."""
        await self.request("DELETE", f"/channels/{channel_id}/moh")

    # -- the calls of "call my phone" (ari/testcall.py) ------------------------------------------
    async def originate(self, endpoint: str, *, app: str, channel_id: str, timeout_s: int, caller_id: str) -> None:
        """``POST /channels``: dial ``endpoint`` (a dial string), ringing at most ``timeout_s``;
        once answered the channel enters the Stasis application ``app``, which gets its events
        from the start (ringing, and its end if it is never answered)."""
        await self.request(
            "POST", "/channels", endpoint=endpoint, app=app, channelId=channel_id, timeout=timeout_s, callerId=caller_id
        )

    async def hangup(self, channel_id: str) -> None:
        """``DELETE /channels/{id}`` (normal clearing)."""
        await self.request("DELETE", f"/channels/{channel_id}")
