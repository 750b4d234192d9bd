"""Which class a held caller hears: the tenant of the call (:func:`tenant_of_call`), then that
tenant's class (:class:`ClassResolver`). The ARI hold handler and both AGI routes (FastAGI and the
classic script) use exactly these two rules; a caller whose call has no tenant, or whose tenant
has no file or cannot be read, hears ``default`` — never silence."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from .errors import InvalidTenantId, OomaMohError
from .logsafe import printable
from .memview import StatusMemory
from .model import DEFAULT_CLASS, MohSetting, moh_class_name, validate_tenant_id
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


#: the endpoint :meth:`ClassResolver.check_catalog` looks up (never mapped: the read only proves
#: the catalog answers)
PROBE_ENDPOINT = "ooma-moh/readyz"


class NodeClasses:
    """The tenant classes this node publishes — what its Asterisk plays — read from the publisher
    (the realtime database or the include file, kept current by ``sync`` or the agent), cached
    for ``cache_s``. ``source`` is the file they are read from (its age: when it last changed)."""

    def __init__(self, current: Callable[[], Mapping[str, str]], source: Path, cache_s: float = 1.0) -> None:
        self._current, self.source, self.cache_s = current, source, cache_s
        self._read: tuple[float, frozenset[str]] | None = None

    def classes(self) -> frozenset[str]:
        """(blocking) The classes published here; none if they cannot be read."""
        if self._read is None or time.monotonic() - self._read[0] >= self.cache_s:
            try:
                classes = frozenset(self._current())
            except (OSError, sqlite3.Error, OomaMohError):
                classes = frozenset()
            self._read = (time.monotonic(), classes)
        return self._read[1]

    def age_s(self) -> float | None:
        """(blocking) Seconds since the published classes last changed (None: never published)."""
        try:
            return max(0.0, time.time() - self.source.stat().st_mtime)
        except OSError:
            return None


class ClassResolver:
    """tenant -> class. The rules, in order:

    1. an invalid tenant id → ``default``;
    2. while the catalog answers: its answer — the tenant's class if it has a file, else
       ``default`` — kept in ``memory`` until the catalog's change mark moves, where there is one
       (a SQLite catalog: :mod:`~ooma_moh.memview`'s rules), else, and while that mark cannot
       be read, cached ``cache_s``;
    3. when the catalog cannot be read (an error, or no answer within :data:`CATALOG_DEADLINE_S`:
       :func:`class_of` applies it), and for ``retry_s`` after each failure without trying it:
       this node's published classes (:class:`NodeClasses`) — the tenant's class if this node
       publishes it, else ``default``. Holds never wait on a database that is down.
    """

    def __init__(
        self,
        catalog: Catalog,
        prefix: str,
        node: NodeClasses | None = None,
        cache_s: float = 2.0,
        retry_s: float = 5.0,
        memory: StatusMemory | None = None,
    ) -> None:
        self.catalog = catalog
        self.prefix = prefix
        self.node = node
        self.cache_s, self.retry_s = cache_s, retry_s
        self._cache: dict[str, tuple[float, Resolution]] = {}
        self._lock = threading.Lock()
        #: the catalog's answers while its mark holds (rule 2); used from the loop and the
        #: catalog's thread, so only under ``_memory_lock`` (a few system calls at most)
        self.memory = memory
        self._memory_lock = threading.Lock()
        #: (until when the catalog is not tried, why it failed) after a failure
        self._down: tuple[float, str] | None = None
        #: the endpoint map as last copied (:meth:`copy_endpoints`)
        self._endpoints: dict[str, str] = {}
        #: reads in flight on the event loop, by tenant (:func:`class_of`)
        self.reading: dict[str, asyncio.Future[Resolution]] = {}

    def remembered(self, tenant: str) -> tuple[Resolution | None, bool]:
        """(the catalog's answer kept while its change mark has not moved, if any; whether the
        memory could say — False without one, or while the mark cannot be read) — rule 2."""
        if self.memory is None:
            return None, False
        with self._memory_lock:
            kept: Resolution | None = self.memory.recall(tenant, 0)
            return kept, kept is not None or self.memory.ticket(tenant, 0) is not None

    def cached(self, tenant: str) -> Resolution | None:
        """A fresh answer without touching the catalog: what the memory keeps while it can say
        (:meth:`remembered`), else one cached ``cache_s``."""
        kept, said = self.remembered(tenant)
        if said:
            return kept
        hit = self._cache.get(tenant)
        if hit and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        return None

    def refresh_due(self, tenant: str, after_s: float) -> bool:
        """True if the answer for ``tenant`` is cached ``cache_s`` (not :meth:`remembered`), at
        least ``after_s`` old, and the catalog is not known to be down: time to read it again
        ahead of expiry (:func:`class_of`)."""
        hit = self._cache.get(tenant)
        return (
            hit is not None
            and time.monotonic() - hit[0] >= after_s
            and self.down() is None
            and not self.remembered(tenant)[1]
        )

    def resolve(self, tenant: str) -> Resolution:
        """The tenant's class (or ``default`` and why), by the rules of the class docstring.
        Blocking: call it off the event loop (through :func:`class_of`, which bounds its wait)."""
        try:
            validate_tenant_id(tenant)
        except InvalidTenantId:
            return Resolution(DEFAULT_CLASS, "invalid tenant id")
        if (why := self.down()) is not None:
            return self.from_this_node(tenant, why)
        ticket = None
        if self.memory is not None:
            with self._memory_lock:
                ticket = self.memory.ticket(tenant, 0)
        try:
            with self._lock:
                record = self.catalog.get(tenant)
        except OomaMohError as exc:
            return self.catalog_failed(tenant, f"catalog unavailable: {printable(exc, 200)}")
        self._down = None
        if record is None:
            answer = Resolution(DEFAULT_CLASS, "unknown tenant")
        elif record.setting is not MohSetting.FILE:
            answer = Resolution(DEFAULT_CLASS, "tenant on default music")
        else:
            answer = Resolution(record.moh_class(self.prefix), None)
        self._cache[tenant] = (time.monotonic(), answer)
        if self.memory is not None:
            with self._memory_lock:  # kept only if the mark did not move during the read
                self.memory.keep(ticket, tenant, 0, answer)
        return answer

    def check_catalog(self) -> str | None:
        """(blocking) Try the catalog now, whatever :meth:`down` says: None if it answers (rule 2
        applies again at once), else why not (rule 3 for ``retry_s``)."""
        try:
            with self._lock:
                self.catalog.endpoint_tenant(PROBE_ENDPOINT)
        except OomaMohError as exc:
            why = f"catalog unavailable: {printable(exc, 200)}"
            self.catalog_failed_at_once(why)
            return why
        self._down = None
        return None

    def down(self) -> str | None:
        """Why the catalog failed, while it is not tried again (rule 3); else None."""
        down = self._down
        return down[1] if down is not None and time.monotonic() < down[0] else None

    def catalog_failed(self, tenant: str, why: str) -> Resolution:
        """Rule 3 for ``tenant`` after the catalog failed (``why``); it is not tried for ``retry_s``."""
        self.catalog_failed_at_once(why)
        return self.from_this_node(tenant, why)

    def catalog_failed_at_once(self, why: str) -> None:
        """The catalog failed (``why``): not tried for ``retry_s``."""
        self._down = (time.monotonic() + self.retry_s, why)

    def from_this_node(self, tenant: str, why: str) -> Resolution:
        """(blocking) Rule 3: the tenant's class if this node publishes it, else ``default``."""
        moh_class = moh_class_name(tenant, self.prefix)
        if self.node is not None and moh_class in self.node.classes():
            return Resolution(moh_class, None)
        return Resolution(DEFAULT_CLASS, why)

    def degraded(self) -> str | None:
        """(blocking) Why holds are resolved from this node's published classes now, and how old
        those are; None while the catalog answers."""
        down = self._down
        if down is None:
            return None
        if self.node is None:
            return f"holds hear default music: {down[1]}"
        age = self.node.age_s()
        published = "never published" if age is None else f"published {age:.0f} s ago"
        return (
            f"holds served from this node's {len(self.node.classes())} published classes"
            f" ({published}, {self.node.source}); {down[1]}"
        )

    def tenant_of_endpoint(self, endpoint: str) -> str | None:
        """(blocking) The tenant mapped to ``endpoint``: the catalog's answer while it answers;
        else (and while :meth:`down`) the copy of the whole map :meth:`copy_endpoints` last
        made, if any."""
        if self.down() is None:
            try:
                with self._lock:
                    return self.catalog.endpoint_tenant(endpoint)
            except OomaMohError as exc:
                self.catalog_failed_at_once(f"catalog unavailable: {printable(exc, 200)}")
        return self._endpoints.get(endpoint)

    def copy_endpoints(self) -> int:
        """(blocking) Keep a copy of the catalog's whole endpoint map in memory, for when it is
        down (``serve ari`` calls it every minute); returns how many endpoints it holds. A catalog
        that does not answer leaves the last copy as it was."""
        if self.down() is None:
            try:
                with self._lock:
                    self._endpoints = self.catalog.endpoints()
            except OomaMohError as exc:
                self.catalog_failed_at_once(f"catalog unavailable: {printable(exc, 200)}")
        return len(self._endpoints)


#: how long a hold waits for the catalog before it is resolved from this node's classes (s)
CATALOG_DEADLINE_S = 1.0


async def tenant_of_endpoint(
    resolver: ClassResolver, endpoint: str, run: Callable[..., Awaitable[str | None]]
) -> str | None:
    """The tenant of ``endpoint`` from the event loop, waiting at most :data:`CATALOG_DEADLINE_S`
    for the catalog (then the last copy of the map, and the catalog not tried for ``retry_s``)."""
    try:
        return await asyncio.wait_for(run(resolver.tenant_of_endpoint, endpoint), CATALOG_DEADLINE_S)
    except TimeoutError:
        resolver.catalog_failed_at_once(f"catalog unavailable: no answer within {CATALOG_DEADLINE_S:g} s")
        return await asyncio.to_thread(resolver.tenant_of_endpoint, endpoint)


def _forget_reading(resolver: ClassResolver, tenant: str, done: asyncio.Future[Resolution]) -> None:
    if resolver.reading.get(tenant) is done:
        del resolver.reading[tenant]
    if not done.cancelled():
        done.exception()  # retrieved: a failure is the waiters' to see, not an unhandled one


def _read(
    resolver: ClassResolver, tenant: str, run: Callable[..., Awaitable[Resolution]]
) -> asyncio.Future[Resolution]:
    """The catalog read of ``tenant`` in flight, started now if there is none: one read per tenant
    at a time, so a burst of its calls shares it."""
    reading = resolver.reading.get(tenant)
    if reading is None:
        reading = resolver.reading[tenant] = asyncio.ensure_future(run(resolver.resolve, tenant))
        reading.add_done_callback(lambda done: _forget_reading(resolver, tenant, done))
    return reading


async def class_of(
    resolver: ClassResolver,
    tenant: str,
    run: Callable[..., Awaitable[Resolution]],
    refresh_after_s: float | None = None,
) -> Resolution:
    """The class of ``tenant``'s holds from the event loop: the cache, else ``resolver.resolve``
    through ``run`` (a thread) for at most :data:`CATALOG_DEADLINE_S`, else rule 3 (in a thread
    of its own: ``run``'s may be the one stuck on the catalog).

    With ``refresh_after_s``, a cached answer at least that old is still returned at once, and
    the catalog is read again in the background (nobody waits on that read): a tenant called
    more often than the cache lasts never waits on the catalog, and no answer is older than
    ``resolver.cache_s`` all the same."""
    cached = resolver.cached(tenant)
    if cached is not None:
        if (
            refresh_after_s is not None
            and tenant not in resolver.reading
            and resolver.refresh_due(tenant, refresh_after_s)
        ):
            _read(resolver, tenant, run)
        return cached
    if (why := resolver.down()) is not None:  # not tried again yet: straight to rule 3
        return await asyncio.to_thread(resolver.from_this_node, tenant, why)
    reading = _read(resolver, tenant, run)
    try:
        async with asyncio.timeout(CATALOG_DEADLINE_S):
            return await asyncio.shield(reading)
    except TimeoutError:
        why = f"catalog unavailable: no answer within {CATALOG_DEADLINE_S:g} s"
        return await asyncio.to_thread(resolver.catalog_failed, tenant, why)


async def keep_endpoint_copy(resolver: ClassResolver, every_s: float = 60.0) -> None:
    """:meth:`ClassResolver.copy_endpoints` now and every ``every_s`` until cancelled."""
    while True:
        await asyncio.to_thread(resolver.copy_endpoints)
        await asyncio.sleep(every_s)
