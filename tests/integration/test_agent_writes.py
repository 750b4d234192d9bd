"""What an agent writes in the catalog per change, on real PostgreSQL (storage/nodes.py): the
record of a change touches its tenants' rows only and is the agent's heartbeat too; its writes
are not preceded by a check of the connection, yet succeed first time after the server restarts
(run once more on a new connection). The cost per change is measured by bench/cluster.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ooma_moh.app import create_catalog
from ooma_moh.config import Settings
from ooma_moh.nodestate import Process
from ooma_moh.storage.nodes import NodeRegistry
from tests.postgres import PostgresServer

ME = Process("me-1", "pid 1 on here", 1, None)


@pytest.fixture
def registry(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[NodeRegistry, str]]:
    settings = Settings(home=tmp_path / "home", database_url=postgres.database())
    create_catalog(settings)
    registry = NodeRegistry(settings.database_url)
    try:
        yield registry, settings.database_url
    finally:
        registry.close()


def rows(url: str) -> dict[str, tuple[str, datetime]]:
    with contextlib.closing(psycopg.connect(url)) as db:
        found = db.execute("SELECT moh_class, version, published_at FROM node_classes WHERE node_id = 'n1'")
        return {c: (v, at) for c, v, at in found.fetchall()}


def heartbeat_at(url: str) -> datetime:
    with contextlib.closing(psycopg.connect(url)) as db:
        row = db.execute("SELECT heartbeat_at FROM nodes WHERE node_id = 'n1'").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


def test_a_change_is_recorded_for_its_classes_alone_and_is_a_heartbeat(registry: tuple[NodeRegistry, str]) -> None:
    book, url = registry
    assert book.claim("n1", ME, 10.0) is None
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    assert book.record_success("n1", {"tenant-a": "v1", "tenant-b": "v1", "tenant-c": "v1"}, t0, instance_id="me-1")
    beat = heartbeat_at(url)
    t1 = t0 + timedelta(minutes=1)
    # a change of a and b: a has a new version, b was withdrawn; c is not in scope and stays
    assert book.record_success("n1", {"tenant-a": "v2"}, t1, scope={"tenant-a", "tenant-b"}, instance_id="me-1")
    assert rows(url) == {"tenant-a": ("v2", t1), "tenant-c": ("v1", t0)}
    assert heartbeat_at(url) > beat  # the record was the holder's heartbeat
    # an unchanged version keeps the time it was published; another instance's record is no beat
    assert not book.record_success("n1", {"tenant-c": "v1"}, t1, scope={"tenant-c"}, instance_id="other")
    assert rows(url)["tenant-c"] == ("v1", t0)
    assert book.record_success("n1", {"tenant-c": "v1"}, t1, scope={"tenant-c"}) is False  # no instance: no beat
    assert book.live_on("tenant-a", "v2") == (1, 1) and book.live_on("tenant-b", None) == (1, 1)


def test_the_agents_writes_succeed_first_time_after_postgresql_restarts(
    registry: tuple[NodeRegistry, str], postgres: PostgresServer
) -> None:
    book, _ = registry
    assert book.claim("n1", ME, 10.0) is None
    assert book.heartbeat("n1", "me-1", 10.0)
    postgres.stop_server("fast")
    postgres.start_server()
    assert book.heartbeat("n1", "me-1", 10.0)  # the kept connection died: run once more, no error
    postgres.stop_server("fast")
    postgres.start_server()
    assert book.record_success("n1", {"tenant-a": "v1"}, datetime.now(UTC), instance_id="me-1")
    book.record_error("n1", "a test error", datetime.now(UTC))
