"""The status a tenant's GET reports while a publication ends: read from the truth, never a second
publication because the truth was read a moment before the first one finished (found by the suite
under load: two syncs for one upload)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ooma_moh.config import Settings
from ooma_moh.http.api import current
from ooma_moh.http.context import BACKEND, CATALOG_THREAD, PUBLICATIONS, READER, SETTINGS, VIEW
from ooma_moh.http.publication import Publications
from ooma_moh.memview import StatusMemory
from ooma_moh.model import MohSetting, TenantMoh

TENANT = TenantMoh("acme", MohSetting.DEFAULT)  # on default music: live once no class of its is published


class Reader:
    """The catalog: acme is on default music."""

    def get(self, tenant_id: str) -> TenantMoh:
        return TENANT


class StaleView:
    """What Asterisk reads, as it was just before the publication removed acme's class: the read
    returns only once the publication has ended and its status is forgotten."""

    def __init__(self, publications: Publications) -> None:
        self.publications = publications

    def published(self, classes: Collection[str] | None = None) -> dict[str, str]:  # noqa: ARG002
        deadline = time.monotonic() + 10
        while self.publications.tracked("acme") is not None:
            assert time.monotonic() < deadline, "the publication never ended"
            time.sleep(0.005)
        return {"tenant-acme": "v1"}  # read before the publication's change


class Unmoved:
    """A change mark that never moves (memview): only the publication's end voids the read."""

    def read(self) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.mark.parametrize("remembering", [False, True], ids=["reads", "memory"])
def test_a_publication_ending_during_the_read_is_not_started_again(tmp_path: Path, remembering: bool) -> None:
    memory = StatusMemory([Unmoved()]) if remembering else None
    published: list[str] = []
    may_finish = threading.Event()

    def publish(tenant_id: str) -> None:
        may_finish.wait(10)
        published.append(tenant_id)

    async def scenario() -> dict[str, Any]:
        with ThreadPoolExecutor(1) as workers, ThreadPoolExecutor(1) as catalog_thread:
            publications = Publications(workers, publish)
            app = web.Application()
            app[SETTINGS] = Settings(home=tmp_path / "home")
            # stand-ins with only what current() reads, for the Catalog and the Syncer the keys hold
            app[READER] = Reader()  # type: ignore[misc]
            app[VIEW] = StaleView(publications)  # type: ignore[misc]
            app[CATALOG_THREAD] = catalog_thread
            app[PUBLICATIONS] = publications
            app[BACKEND] = SimpleNamespace(memory=memory)  # type: ignore[misc]
            publications.start("acme")
            request = make_mocked_request("GET", "/api/v1/tenants/acme/moh", app=app)
            body = asyncio.ensure_future(current(request, "acme"))
            await asyncio.sleep(0.05)  # the read has begun while the publication runs
            may_finish.set()
            result = await body
            await publications.drain()
            return result

    body = asyncio.run(scenario())
    assert published == ["acme"], published  # once, not a second time for a stale read
    assert body["status"]["state"] == "publishing"  # the next read says live
    if memory is not None:  # the stale read was not kept: the publication ended during it
        assert memory.recall("acme", 1) is None and memory.recall("acme", 2) is None
