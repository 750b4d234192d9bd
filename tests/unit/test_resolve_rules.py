"""tenant -> class when the catalog is down (issue 25 item 1): the hold paths fall back to the
classes this node publishes — what its Asterisk plays — instead of ``default``, never wait on a
dead database for more than a second, and say so on ``/readyz``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from ooma_moh import health
from ooma_moh.errors import StorageError
from ooma_moh.memview import COALESCE_S, StatusMemory
from ooma_moh.model import DEFAULT_CLASS, MohSetting, TenantMoh
from ooma_moh.resolve import ClassResolver, NodeClasses, Resolution, class_of, tenant_of_endpoint


class Catalog:
    """Tenants on file; ``down`` makes every read fail, ``hang`` makes it wait."""

    def __init__(self, on_file: set[str], endpoints: dict[str, str] | None = None) -> None:
        self.on_file = on_file
        self.endpoint_map = endpoints or {}
        self.down = False
        self.hang = threading.Event()
        self.hang.set()
        self.reads = 0

    def get(self, tenant_id: str) -> TenantMoh | None:
        self.reads += 1
        self.hang.wait(10)
        if self.down:
            raise StorageError("catalog_unreachable", "the connection to the catalog database failed")
        return TenantMoh(tenant_id, MohSetting.FILE) if tenant_id in self.on_file else None

    def endpoint_tenant(self, endpoint: str) -> str | None:
        self.get("probe")  # fails or hangs as a read does
        return self.endpoint_map.get(endpoint)

    def endpoints(self) -> dict[str, str]:
        self.get("probe")
        return dict(self.endpoint_map)


def node(tmp_path: Path, classes: set[str]) -> NodeClasses:
    source = tmp_path / "realtime.sqlite3"
    source.write_bytes(b"")
    return NodeClasses(lambda: dict.fromkeys(classes, "/moh/x"), source)


def resolver(tmp_path: Path, catalog: Catalog, published: set[str]) -> ClassResolver:
    # Catalog has only the methods the resolver calls, not the whole Catalog protocol
    return ClassResolver(catalog, "tenant-", node(tmp_path, published))  # type: ignore[arg-type]


def test_the_catalog_decides_while_it_answers(tmp_path: Path) -> None:
    catalog = Catalog({"acme"})
    classes = resolver(tmp_path, catalog, published={"tenant-beta"})
    assert classes.resolve("acme") == Resolution("tenant-acme", None)
    assert classes.resolve("beta") == Resolution(DEFAULT_CLASS, "unknown tenant")  # published, but gone
    assert classes.degraded() is None


def test_with_the_catalog_down_the_nodes_published_classes_decide(tmp_path: Path) -> None:
    catalog = Catalog({"acme", "beta"})
    catalog.down = True
    classes = resolver(tmp_path, catalog, published={"tenant-acme"})
    assert classes.resolve("acme") == Resolution("tenant-acme", None)  # not default: its file is here
    beta = classes.resolve("beta")
    assert beta.moh_class == DEFAULT_CLASS and beta.reason is not None and "catalog unavailable" in beta.reason
    assert catalog.reads == 1  # not tried again for retry_s
    said = classes.degraded()
    assert said is not None and "1 published classes" in said and "published 0 s ago" in said, said
    catalog.down = False
    assert classes.check_catalog() is None  # /readyz's probe finds it back: rule 2 at once
    assert classes.resolve("beta") == Resolution("tenant-beta", None)
    assert classes.degraded() is None


def test_with_the_catalog_down_the_last_copy_of_the_endpoint_map_decides(tmp_path: Path) -> None:
    catalog = Catalog({"acme"}, {"PJSIP/acme-100": "acme"})
    classes = resolver(tmp_path, catalog, published={"tenant-acme"})
    assert classes.tenant_of_endpoint("PJSIP/acme-100") == "acme"
    assert classes.tenant_of_endpoint("PJSIP/nobody") is None
    assert classes.copy_endpoints() == 1  # serve ari does it every minute
    catalog.down = True
    catalog.endpoint_map["PJSIP/acme-100"] = "changed meanwhile"  # unseen: the catalog is down
    assert classes.tenant_of_endpoint("PJSIP/acme-100") == "acme"
    assert classes.copy_endpoints() == 1  # a failed copy keeps the last one
    assert classes.tenant_of_endpoint("PJSIP/acme-100") == "acme"


def test_a_hung_catalog_costs_a_hold_one_second_once(tmp_path: Path) -> None:
    catalog = Catalog({"acme"})
    catalog.hang.clear()
    classes = resolver(tmp_path, catalog, published={"tenant-acme"})

    async def scenario() -> list[Resolution]:
        first = await class_of(classes, "acme", asyncio.to_thread)  # waits CATALOG_DEADLINE_S
        later = [await class_of(classes, "acme", asyncio.to_thread) for _ in range(20)]  # straight to rule 3
        assert await tenant_of_endpoint(classes, "PJSIP/acme-1", asyncio.to_thread) is None
        catalog.hang.set()
        return [first, *later]

    answers = asyncio.run(scenario())
    assert set(answers) == {Resolution("tenant-acme", None)}
    assert catalog.reads == 1  # the other 20 holds did not queue behind the hung read


def test_readyz_of_a_hold_path_says_it_is_degraded_and_how(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    catalog = Catalog({"acme"})
    classes = resolver(tmp_path, catalog, published={"tenant-acme", "tenant-beta"})
    executor = ThreadPoolExecutor(1)
    probe = health.CatalogProbe(executor, classes.check_catalog)

    async def scenario() -> list[Any]:
        ready = await health.hold_readiness(classes, probe)
        catalog.down = True
        degraded = await health.hold_readiness(classes, probe)
        return [ready, degraded, health.readiness_response(degraded)]

    ready, degraded, response = asyncio.run(scenario())
    executor.shutdown()
    assert ready is None
    assert isinstance(degraded, health.Degraded) and "2 published classes" in degraded
    assert response.status == 200 and response.text.startswith("ready, degraded: holds served from")


def test_a_burst_of_holds_for_one_tenant_shares_one_catalog_read(tmp_path: Path) -> None:
    """256 dialplan calls for one tenant at once used to queue 256 reads on the catalog thread;
    on a slow catalog the last ones passed the 1 s deadline. Now they share one read."""
    catalog = Catalog({"acme"})
    catalog.hang.clear()
    classes = resolver(tmp_path, catalog, published=set())  # nothing published: rule 3 would say default

    async def scenario() -> list[Resolution]:
        burst = [asyncio.ensure_future(class_of(classes, "acme", asyncio.to_thread)) for _ in range(256)]
        await asyncio.sleep(0.3)  # a slow read, well within the deadline
        catalog.hang.set()
        return list(await asyncio.gather(*burst))

    assert set(asyncio.run(scenario())) == {Resolution("tenant-acme", None)}
    assert catalog.reads == 1 and classes.reading == {}


class Mark:
    """The catalog's change mark, moved by the test (None: cannot be read)."""

    def __init__(self) -> None:
        self.value: object = 0

    def read(self) -> object:
        return self.value

    def close(self) -> None:
        pass


def remembering(tmp_path: Path, catalog: Catalog) -> tuple[ClassResolver, Mark]:
    """A resolver whose time-based cache would hold a minute: while the mark can be read, only
    the memory decides."""
    mark = Mark()
    memory = StatusMemory([mark], credentials=False)
    classes = ClassResolver(catalog, "tenant-", node(tmp_path, set()), cache_s=60, memory=memory)  # type: ignore[arg-type]
    return classes, mark


def test_an_answer_is_kept_until_the_catalogs_mark_moves(tmp_path: Path) -> None:
    """Rule 2 with a mark: no read at all while the catalog has not changed, however long; the
    next answer after a change is the catalog's new one (not up to 2 s late)."""
    catalog = Catalog({"acme"})
    classes, mark = remembering(tmp_path, catalog)

    async def scenario() -> None:
        for _ in range(50):
            assert await class_of(classes, "acme", asyncio.to_thread, refresh_after_s=0) == Resolution(
                "tenant-acme", None
            )
        assert catalog.reads == 1 and classes.reading == {}  # no read-ahead either
        catalog.on_file.discard("acme")
        mark.value = 1  # the deletion committed
        await asyncio.sleep(COALESCE_S * 2)
        assert await class_of(classes, "acme", asyncio.to_thread) == Resolution(DEFAULT_CLASS, "unknown tenant")
        assert catalog.reads == 2

    asyncio.run(scenario())


def test_an_unreadable_mark_falls_back_to_the_time_limited_cache(tmp_path: Path) -> None:
    catalog = Catalog({"acme"})
    classes, mark = remembering(tmp_path, catalog)
    mark.value = None  # e.g. a commit in progress: nothing is recalled, nothing kept
    assert classes.resolve("acme") == Resolution("tenant-acme", None)
    assert classes.remembered("acme") == (None, False)
    assert classes.cached("acme") == Resolution("tenant-acme", None)  # cached cache_s, as without a mark
    assert classes.refresh_due("acme", 0)  # and read ahead of expiry, as without a mark
    mark.value = 1
    assert classes.cached("acme") is None  # readable again: the mark decides, and nothing is kept
    assert catalog.reads == 1


def test_an_answer_read_while_the_catalog_changed_is_not_kept(tmp_path: Path) -> None:
    """The mark moved during the read (rule 4): the read may have seen the change half."""
    catalog = Catalog({"acme"})
    classes, mark = remembering(tmp_path, catalog)
    reading = catalog.get

    def get_while_committing(tenant_id: str) -> TenantMoh | None:
        mark.value = 7
        return reading(tenant_id)

    catalog.get = get_while_committing  # type: ignore[method-assign]
    classes.resolve("acme")
    assert classes.cached("acme") is None
    catalog.get = reading  # type: ignore[method-assign]
    classes.resolve("acme")
    assert classes.cached("acme") == Resolution("tenant-acme", None) and catalog.reads == 2


def test_a_catalog_failure_is_never_kept(tmp_path: Path) -> None:
    catalog = Catalog({"acme"})
    classes, _ = remembering(tmp_path, catalog)
    catalog.down = True
    assert classes.resolve("acme").moh_class == DEFAULT_CLASS
    assert classes.remembered("acme") == (None, True)  # the memory can say: nothing kept
