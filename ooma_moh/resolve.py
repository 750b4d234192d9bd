"""tenant -> musiconhold class, as the AGI route and the ARI hold handler need it."""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from .errors import InvalidTenantId, OomaMohError
from .model import DEFAULT_CLASS, MohSetting, validate_tenant_id
from .storage import Catalog


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
