"""The ``moh`` route: which tenant a dialplan call belongs to, and the class to put on it.

Tenant, in order: the AGI argument (``agi://…/moh?tenant=X`` or ``AGI(agi://…/moh,X)``), the
channel variable ``OOMA_MOH_TENANT``, ``CHANNEL(accountcode)`` (the ``agi_accountcode`` of the
environment). The route never breaks a call: anything wrong gives ``default`` and a reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..errors import InvalidTenantId, OomaMohError
from ..model import DEFAULT_CLASS, MohSetting, validate_tenant_id
from ..storage import Catalog
from .protocol import AgiRequest, get_variable, set_variable

TENANT_VARIABLE = "OOMA_MOH_TENANT"
CLASS_VARIABLE = "OOMA_MOH_CLASS"
ROUTE = "moh"


@dataclass(frozen=True)
class Decision:
    """The class for one call and why."""

    tenant: str | None
    source: str
    moh_class: str
    reason: str | None = None

    def variables(self) -> list[tuple[str, str]]:
        """What to set on the channel: its music class, and OOMA_MOH_CLASS for the dialplan."""
        return [("CHANNEL(musicclass)", self.moh_class), (CLASS_VARIABLE, self.moh_class)]

    def commands(self) -> list[str]:
        """:meth:`variables` as AGI command lines."""
        return [set_variable(name, value) for name, value in self.variables()]


def tenant_from_request(request: AgiRequest) -> str | None:
    """The tenant named by the request itself (query or first argument), if any."""
    return request.query.get("tenant") or (request.args[0] if request.args and request.args[0] else None)


def needs_variable(request: AgiRequest) -> str | None:
    """The command to fetch ``OOMA_MOH_TENANT`` when the request names no tenant, else None."""
    return None if tenant_from_request(request) else get_variable(TENANT_VARIABLE)


def choose_tenant(request: AgiRequest, variable: str | None) -> tuple[str | None, str]:
    """(tenant, source) from the request, the variable's value, or the accountcode."""
    if tenant := tenant_from_request(request):
        return tenant, "argument"
    if variable:
        return variable, "variable"
    account = request.env.get("agi_accountcode", "")
    if account and account != "unknown":
        return account, "accountcode"
    return None, "none"


class ClassResolver:
    """tenant -> class from the catalog, with a short cache; errors become ``default``."""

    def __init__(self, catalog: Catalog, prefix: str, cache_s: float = 2.0) -> None:
        self.catalog = catalog
        self.prefix = prefix
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, str, str | None]] = {}
        self._lock = threading.Lock()

    def cached(self, tenant: str) -> tuple[str, str | None] | None:
        """A fresh cached answer, without touching the catalog."""
        hit = self._cache.get(tenant)
        if hit and time.monotonic() - hit[0] < self.cache_s:
            return hit[1], hit[2]
        return None

    def resolve(self, tenant: str) -> tuple[str, str | None]:
        """(class, fallback reason or None). Blocking: call it off the event loop."""
        try:
            validate_tenant_id(tenant)
        except InvalidTenantId:
            return DEFAULT_CLASS, "invalid tenant id"
        try:
            with self._lock:
                record = self.catalog.get(tenant)
        except OomaMohError as exc:
            return DEFAULT_CLASS, f"catalog unavailable: {exc}"
        if record is None:
            answer = (DEFAULT_CLASS, "unknown tenant")
        elif record.setting is not MohSetting.FILE:
            answer = (DEFAULT_CLASS, "tenant on default music")
        else:
            answer = (record.moh_class(self.prefix), None)
        self._cache[tenant] = (time.monotonic(), *answer)
        return answer


def decide(tenant: str | None, source: str, resolved: tuple[str, str | None] | None) -> Decision:
    """The decision once the tenant is known and (if there is one) resolved."""
    if tenant is None or resolved is None:
        return Decision(None, source, DEFAULT_CLASS, "no tenant on the call")
    moh_class, reason = resolved
    return Decision(tenant, source, moh_class, reason)
