"""An in-memory ARI for unit tests of the hold handler: channels, bridges, variables, and a log
of every action the handler takes. It models only what the handler relies on (docs/ari.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ooma_moh.errors import AriRequestFailed
from ooma_moh.model import MohSetting, TenantMoh
from ooma_moh.resolve import ClassResolver

T = TypeVar("T")


class FakeAri:
    """:class:`ooma_moh.ari.client.Ari` in memory. ``actions`` records what the handler did:
    ``("class", channel, value)``, ``("moh", channel, class)``, ``("stop", channel)``,
    ``("mark", channel, value)``."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}
        self.bridges: dict[str, dict[str, Any]] = {}
        self.variables: dict[tuple[str, str], str] = {}
        self.actions: list[tuple[str, ...]] = []
        self.requests = 0
        #: channels in no Stasis application (the dialplan's): ARI answers 409 to changes
        self.outside: set[str] = set()

    # -- building a scene --------------------------------------------------------------------
    def channel(
        self, cid: str, name: str, *, tenant: str | None = None, accountcode: str = "", exported: bool = True
    ) -> dict[str, Any]:
        """Add a channel; ``exported`` says whether ari.conf exports OOMA_MOH_TENANT/HOLD."""
        data: dict[str, Any] = {"id": cid, "name": name, "accountcode": accountcode}
        if exported:
            data["channelvars"] = {"OOMA_MOH_TENANT": tenant or "", "OOMA_MOH_HOLD": ""}
        if tenant:
            self.variables[(cid, "OOMA_MOH_TENANT")] = tenant
        self.channels[cid] = data
        return data

    def bridge(self, bid: str, members: list[str], technology: str = "simple_bridge") -> dict[str, Any]:
        """Create or update a bridge."""
        self.bridges[bid] = {"id": bid, "technology": technology, "bridge_type": "mixing", "channels": list(members)}
        return self.bridges[bid]

    def event(self, kind: str, channel: str | None = None, bridge: str | None = None) -> dict[str, Any]:
        """An event as the WebSocket delivers it, built from the current scene."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
        data: dict[str, Any] = {"type": kind, "timestamp": stamp}
        if channel is not None:
            data["channel"] = dict(self.channels[channel])
        if bridge is not None:
            data["bridge"] = dict(self.bridges[bridge])
        return data

    def class_on(self, cid: str) -> str | None:
        return self.variables.get((cid, "CHANNEL(musicclass)"))

    # -- the Ari protocol --------------------------------------------------------------------
    def _known(self, cid: str) -> dict[str, Any]:
        if cid not in self.channels:
            raise AriRequestFailed("GET", f"/channels/{cid}", 404, "Channel not found")
        return self.channels[cid]

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        self.requests += 1
        return dict(self._known(channel_id))

    async def list_channels(self) -> list[dict[str, Any]]:
        self.requests += 1
        out = []
        for cid, data in self.channels.items():
            data = dict(data)
            if "channelvars" in data:
                data["channelvars"] = {
                    **data["channelvars"],
                    "OOMA_MOH_HOLD": self.variables.get((cid, "OOMA_MOH_HOLD"), ""),
                }
            out.append(data)
        return out

    async def get_bridge(self, bridge_id: str) -> dict[str, Any]:
        self.requests += 1
        if bridge_id not in self.bridges:
            raise AriRequestFailed("GET", f"/bridges/{bridge_id}", 404, "Bridge not found")
        return dict(self.bridges[bridge_id])

    async def list_bridges(self) -> list[dict[str, Any]]:
        self.requests += 1
        return [dict(b) for b in self.bridges.values()]

    async def get_variable(self, channel_id: str, name: str) -> str | None:
        self.requests += 1
        self._known(channel_id)
        return self.variables.get((channel_id, name))

    def _in_stasis(self, method: str, path: str, cid: str) -> None:
        if cid in self.outside:
            raise AriRequestFailed(method, path, 409, "Channel not in Stasis application")

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        self.requests += 1
        self._known(channel_id)
        self._in_stasis("POST", f"/channels/{channel_id}/variable", channel_id)
        self.variables[(channel_id, name)] = value
        kind = "class" if name == "CHANNEL(musicclass)" else "mark" if name == "OOMA_MOH_HOLD" else name
        self.actions.append((kind, channel_id, value))

    async def start_moh(self, channel_id: str, moh_class: str) -> None:
        self.requests += 1
        self._known(channel_id)
        self._in_stasis("POST", f"/channels/{channel_id}/moh", channel_id)
        self.actions.append(("moh", channel_id, moh_class))

    async def stop_moh(self, channel_id: str) -> None:
        self.requests += 1
        self._known(channel_id)
        self.actions.append(("stop", channel_id))


class FakeCatalog:
    """Tenants on file (``on_file``), the rest unknown; an endpoint map."""

    def __init__(self, on_file: set[str], endpoints: dict[str, str] | None = None) -> None:
        self.on_file = on_file
        self.endpoint_map = endpoints or {}

    def get(self, tenant_id: str) -> TenantMoh | None:
        if tenant_id in self.on_file:
            return TenantMoh(tenant_id, MohSetting.FILE)
        return None

    def endpoint_tenant(self, endpoint: str) -> str | None:
        return self.endpoint_map.get(endpoint)


def resolver(on_file: set[str], endpoints: dict[str, str] | None = None) -> ClassResolver:
    """A real :class:`ClassResolver` over :class:`FakeCatalog`."""
    # FakeCatalog has only the two methods the resolver calls, not the whole Catalog protocol
    return ClassResolver(FakeCatalog(on_file, endpoints), "tenant-")  # type: ignore[arg-type]


async def inline(func: Callable[..., T], *args: Any) -> T:
    """``run_blocking`` without a thread: the fake catalog does no I/O."""
    return func(*args)
