"""Which class a held caller hears: the tenant of the call (:func:`tenant_of_call`), then that
tenant's class (:class:`ClassResolver`). The ARI hold handler and both AGI routes (FastAGI and the
classic script) use exactly these two rules; a caller whose call has no tenant, or whose tenant
has no file or cannot be read, hears ``default`` — never silence."""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from .errors import InvalidTenantId, OomaMohError
from .model import DEFAULT_CLASS, MohSetting, validate_tenant_id
from .storage import Catalog


def tenant_of_call(
    *,
    argument: str | None = None,
    variable: str | None = None,
    accountcode: str | None = None,
    endpoint_tenant: str | None = None,
) -> tuple[str | None, str]:
    """The tenant a call belongs to, and where it came from. Order of preference, the first one
    present wins (empty values are absent, and so is the accountcode ``unknown``, which is how
    Asterisk's AGI environment says "none"):

    1. ``argument`` — the dialplan names the tenant to the AGI route (``agi://…/moh?tenant=X``,
       ``AGI(agi://…/moh,X)``, ``AGI(ooma-moh-agi,X)``); the ARI handler has no such argument;
    2. ``variable`` — the channel variable ``OOMA_MOH_TENANT`` (the provider's dialplan or endpoint
       sets it; ari.conf can export it with every event);
    3. ``accountcode`` — ``CHANNEL(accountcode)``;
    4. ``endpoint_tenant`` — the catalog's endpoint map for the channel's endpoint
       (``PJSIP/acme-100`` -> ``acme``): the ARI handler looks it up only when 1-3 gave nothing,
       and never for helper channels (announcers, recorders, snoops).

    Returns ``(None, "none")`` when the call has no tenant (it then hears ``default``).
    """
    for value, source in (
        (argument, "argument"),
        (variable, "variable"),
        (accountcode if accountcode != "unknown" else None, "accountcode"),
        (endpoint_tenant, "endpoint"),
    ):
        if value:
            return value, source
    return None, "none"


class Resolution(NamedTuple):
    """The class a tenant's held callers hear, and why it is ``default`` when it is (None when
    it is the tenant's own class)."""

    moh_class: str
    reason: str | None


class ClassResolver:
    """tenant -> class from the catalog, with a short cache; errors become ``default``."""

    def __init__(self, catalog: Catalog, prefix: str, cache_s: float = 2.0) -> None:
        self.catalog = catalog
        self.prefix = prefix
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Resolution]] = {}
        self._lock = threading.Lock()

    def cached(self, tenant: str) -> Resolution | None:
        """A fresh cached answer, without touching the catalog."""
        hit = self._cache.get(tenant)
        if hit and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        return None

    def resolve(self, tenant: str) -> Resolution:
        """The tenant's class (or ``default`` and why). Blocking: call it off the event loop."""
        try:
            validate_tenant_id(tenant)
        except InvalidTenantId:
            return Resolution(DEFAULT_CLASS, "invalid tenant id")
        try:
            with self._lock:
                record = self.catalog.get(tenant)
        except OomaMohError as exc:
            return Resolution(DEFAULT_CLASS, f"catalog unavailable: {exc}")
        if record is None:
            answer = Resolution(DEFAULT_CLASS, "unknown tenant")
        elif record.setting is not MohSetting.FILE:
            answer = Resolution(DEFAULT_CLASS, "tenant on default music")
        else:
            answer = Resolution(record.moh_class(self.prefix), None)
        self._cache[tenant] = (time.monotonic(), answer)
        return answer

    def tenant_of_endpoint(self, endpoint: str) -> str | None:
        """The tenant mapped to ``endpoint`` in the catalog (blocking; None on any problem)."""
        try:
            with self._lock:
                return self.catalog.endpoint_tenant(endpoint)
        except OomaMohError:
            return None
