"""The cluster without Asterisk: one shared PostgreSQL catalog and S3 bucket (real servers started
by the suite), an "API host" that uploads, and two nodes, each with its own home, MOH directory
and realtime database, each running a real `ooma-moh agent` process. What a node publishes is read
from its realtime database, as its Asterisk would read it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner

from ooma_moh import metrics
from ooma_moh.agent import Agent
from ooma_moh.app import build_service, create_catalog, hold_resolver, make_agent
from ooma_moh.cli import main
from ooma_moh.config import Settings, settings_environ
from ooma_moh.model import TenantMoh
from ooma_moh.publish import REALTIME_SCHEMA, RealtimePublisher
from ooma_moh.resolve import Resolution
from ooma_moh.storage.nodes import NodeRegistry
from tests.audio import tone
from tests.integration.test_blob_backends import upload_tone
from tests.integration.test_http_api import api, cli
from tests.postgres import PostgresServer, wait_until_down
from tests.s3server import CREDENTIALS


class Node:
    """One node: its settings and its agent process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = settings.home.parent / f"agent-{settings.node_id}.log"

    def start(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **CREDENTIALS, **settings_environ(self.settings)}
        with open(self.log, "ab") as log:  # the agent keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ooma_moh", "agent"], env=env, stderr=log, stdout=subprocess.DEVNULL
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def published(self) -> dict[str, str]:
        """class -> version, as this node's Asterisk would read it."""
        if not self.settings.realtime_db.exists():
            return {}
        rows = RealtimePublisher(self.settings.realtime_db, self.settings.class_prefix).current()
        return {c: Path(d).name for c, d in rows.items()}

    def wait_for(self, expected: dict[str, str | None], timeout: float = 30.0, since: float | None = None) -> float:
        """Seconds (from ``since``, a monotonic time; default now) until every class of
        ``expected`` is published at that version (None: not published); fails after ``timeout``."""
        start = time.monotonic() if since is None else since
        while True:
            now = self.published()
            if all(now.get(c) == v for c, v in expected.items()):
                return time.monotonic() - start
            assert self.alive(), self.log.read_text()[-3000:]
            assert time.monotonic() - start < timeout, (
                self.settings.node_id,
                now,
                expected,
                self.log.read_text()[-3000:],
            )
            time.sleep(0.05)


#: The ``cluster`` fixture: the API host's settings and two nodes.
Cluster = tuple[Settings, Node, Node]


@pytest.fixture
def cluster(s3_settings: Settings, tmp_path: Path) -> Iterator[Cluster]:
    """The API host's settings and two nodes with running agents."""
    nodes = []
    for name in ("node-a", "node-b"):
        home = tmp_path / name
        settings = dataclasses.replace(
            s3_settings,
            home=home,
            node_id=name,
            agent_reconcile_s=2.0,
            moh_dir=home / "moh",
            realtime_db=home / "realtime.sqlite3",
            classes_conf=home / "classes.conf",
        )
        nodes.append(Node(settings))
    for node in nodes:
        node.start()
    try:
        yield s3_settings, nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL)
    for node in nodes:
        assert "Traceback" not in node.log.read_text(), node.log.read_text()


def upload(host: Settings, tenant: str, freq: float, tmp_path: Path) -> TenantMoh:
    return upload_tone(host, tenant, freq, tmp_path)


def show(host: Settings, tenant: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(cli(host, "show", tenant, "--json")))  # a JSON object


def delete(host: Settings, tenant: str) -> None:
    service = build_service(host)
    try:
        service.delete(tenant)
    finally:
        service.catalog.close()


def test_a_change_reaches_every_node_and_a_delete_leaves_every_node(cluster: Cluster, tmp_path: Path) -> None:
    host, a, b = cluster
    acme = upload(host, "acme", 440, tmp_path)
    committed = time.monotonic()
    lag = {n.settings.node_id: round(n.wait_for({"tenant-acme": acme.version}, since=committed), 3) for n in (a, b)}
    print(f"catalog commit -> published on each node (s): {lag}")
    for node in (a, b):  # published only once complete on the node's own disk, checked
        version_dir = node.settings.moh_dir / "tenant-acme" / acme.version
        assert sorted(p.suffix for p in version_dir.iterdir()) == [".alaw", ".g722", ".sln", ".sln16", ".ulaw"]
    assert show(host, "acme")["nodes"] == {"live": 2, "of": 2}
    replaced = upload(host, "acme", 660, tmp_path)
    for node in (a, b):
        node.wait_for({"tenant-acme": replaced.version})
    token = cli(host, "tokens", "create", "--operator").strip().splitlines()[-1]

    async def via_api() -> dict[str, Any]:
        async with api(host, token) as client:
            status, body = await client.get("acme")
            assert status == 200, body
            return cast(dict[str, Any], body["status"])  # a JSON object

    assert asyncio.run(via_api()) == {"state": "live", "reason": None, "nodes": {"live": 2, "of": 2}}
    delete(host, "acme")
    for node in (a, b):
        node.wait_for({"tenant-acme": None})
    env = {"OOMA_MOH_DATABASE_URL": host.database_url}
    rows = json.loads(CliRunner().invoke(main, ["--home", str(host.home), "nodes", "--json"], env=env).stdout)
    assert [(r["node"], r["behind"], r["last_error"]) for r in rows] == [("node-a", 0, None), ("node-b", 0, None)]


def test_a_node_that_was_down_catches_up_and_the_other_is_not_disturbed(cluster: Cluster, tmp_path: Path) -> None:
    host, a, b = cluster
    first = upload(host, "acme", 440, tmp_path)
    for node in (a, b):
        node.wait_for({"tenant-acme": first.version})
    b.stop()
    second = upload(host, "acme", 660, tmp_path)
    globex = upload(host, "globex", 520, tmp_path)
    delete(host, "acme")
    a.wait_for({"tenant-acme": None, "tenant-globex": globex.version})
    assert b.published() == {"tenant-acme": first.version}  # B, down, still plays what it had
    env = {"OOMA_MOH_DATABASE_URL": host.database_url}
    rows = json.loads(CliRunner().invoke(main, ["--home", str(host.home), "nodes", "--json"], env=env).stdout)
    behind = {r["node"]: (r["state"], r["behind"]) for r in rows}
    assert behind == {"node-a": ("live", 0), "node-b": ("down", 2)}, rows  # acme still played, globex missing
    # B stopped (its id released): down, so not counted until its agent is back (docs/cluster.md, "Nodes")
    assert show(host, "globex")["nodes"] == {"live": 1, "of": 1}
    assert show(host, "acme")["nodes"] == {"live": 1, "of": 1}
    token = cli(host, "tokens", "create", "--operator").strip().splitlines()[-1]

    async def via_api() -> dict[str, Any]:
        async with api(host, token) as client:
            return cast(dict[str, Any], (await client.get("globex"))[1]["status"])  # a JSON object

    assert asyncio.run(via_api()) == {"state": "live", "reason": None, "nodes": {"live": 1, "of": 1}}
    assert second.version != first.version
    b.start()
    b.wait_for({"tenant-acme": None, "tenant-globex": globex.version})
    deadline = time.monotonic() + 30  # counted again from its first heartbeat, once it has caught up
    while show(host, "globex")["nodes"] != {"live": 2, "of": 2}:
        assert time.monotonic() < deadline, show(host, "globex")
        time.sleep(0.1)


def test_agent_killed_at_any_moment_converges_on_restart(cluster: Cluster, tmp_path: Path) -> None:
    host, a, b = cluster
    for n, freq in enumerate((440, 520, 660)):
        tenant = upload(host, f"t{n}", freq, tmp_path)
        time.sleep(0.05 * n)  # a different moment of the agent's work each time
        a.stop(signal.SIGKILL)
        a.start()
        a.wait_for({f"tenant-t{n}": tenant.version})
    for moh_class, version in a.published().items():  # nothing half-written was published
        assert len(list((a.settings.moh_dir / moh_class / version).iterdir())) == 5


def test_catalog_down_nodes_keep_their_music_and_converge_when_it_returns(
    cluster: Cluster, postgres: PostgresServer, tmp_path: Path
) -> None:
    host, a, b = cluster
    acme = upload(host, "acme", 440, tmp_path)
    for node in (a, b):
        node.wait_for({"tenant-acme": acme.version})
    postgres.stop_server("immediate")
    try:
        wait_until_down(host.database_url)
        with pytest.raises(Exception, match="cannot be reached"):
            upload(host, "acme", 660, tmp_path)  # uploads fail clearly while it is down
        time.sleep(3)  # two reconcile periods pass with the catalog down (checked below)
        for node in (a, b):
            assert node.alive() and node.published() == {"tenant-acme": acme.version}
    finally:
        postgres.start_server()
    changed = upload(host, "acme", 660, tmp_path)
    for node in (a, b):
        node.wait_for({"tenant-acme": changed.version}, timeout=60)


def test_object_storage_down_while_a_node_catches_up(
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Node B's agent starts while the object storage is down: it cannot fetch the new renditions,
    so it keeps publishing what it had (never a half-made version), says so in `nodes`, and
    converges by itself once the storage is back."""
    from ooma_moh.app import create_catalog
    from tests.s3server import S3Server

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    own = S3Server().start()  # its own server: this test stops it
    nodes = []
    try:
        host = Settings(
            home=tmp_path / "host",
            database_url=postgres.database(),
            blob_url=f"s3://{own.bucket()}/moh",
            s3_endpoint_url=own.endpoint,
        )
        create_catalog(host)
        for name in ("node-a", "node-b"):
            home = tmp_path / name
            nodes.append(
                Node(
                    dataclasses.replace(
                        host,
                        home=home,
                        node_id=name,
                        agent_reconcile_s=2.0,
                        moh_dir=home / "moh",
                        realtime_db=home / "realtime.sqlite3",
                        classes_conf=home / "classes.conf",
                    )
                )
            )
        a, b = nodes
        for node in nodes:
            node.start()
        first = upload(host, "acme", 440, tmp_path)
        for node in nodes:
            node.wait_for({"tenant-acme": first.version})
        b.stop()
        second = upload(host, "acme", 660, tmp_path)
        a.wait_for({"tenant-acme": second.version})
        own.stop()
        b.start()
        deadline = time.monotonic() + 60
        while "the node keeps what it publishes" not in b.log.read_text():
            assert b.alive() and time.monotonic() < deadline, b.log.read_text()[-3000:]
            time.sleep(0.2)
        assert b.published() == {"tenant-acme": first.version}  # the old file, whole
        assert not (b.settings.moh_dir / "tenant-acme" / second.version).exists()
        rows = json.loads(cli(host, "nodes", "--json"))
        assert {r["node"]: bool(r["last_error"]) for r in rows} == {"node-a": False, "node-b": True}, rows
        own.start()
        b.wait_for({"tenant-acme": second.version}, timeout=90)
        assert len(list((b.settings.moh_dir / "tenant-acme" / second.version).iterdir())) == 5
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL)
        own.close()


# --- a sync that publishes but leaves something undone is not a failure of the agent ----------


@pytest.fixture
def pg_host(postgres: PostgresServer, tmp_path: Path) -> Settings:
    """A host with the catalog on PostgreSQL and its blobs in its home (no S3 needed here)."""
    settings = Settings(home=tmp_path / "host", database_url=postgres.database())
    create_catalog(settings)
    return settings


@contextlib.contextmanager
def in_process_agent(host: Settings, tmp_path: Path, **fields: Any) -> Iterator[tuple[Agent, NodeRegistry]]:
    """An agent of its own node (MOH directory, realtime database) on ``host``'s catalog and blobs,
    running in a thread, and the catalog's node registry; the agent reconciles only every 10
    minutes, so a change it publishes sooner came through LISTEN/NOTIFY. Stopped on leaving."""
    node = tmp_path / "node-r"
    settings = dataclasses.replace(
        host,
        node_id="node-r",
        agent_reconcile_s=600.0,
        moh_dir=node / "moh",
        realtime_db=node / "realtime.sqlite3",
        classes_conf=node / "classes.conf",
        **fields,
    )
    agent = make_agent(settings, "node-r")
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    registry: NodeRegistry | None = None
    try:
        registry = NodeRegistry(host.database_url)
        yield agent, registry
    finally:
        if registry is not None:
            registry.close()
        agent.stop()
        thread.join(30)
    assert not thread.is_alive()


def until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def failures() -> float:
    return metrics.REGISTRY.get_sample_value("ooma_moh_agent_failures_total") or 0.0


def incomplete(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("ooma_moh_agent_incomplete_syncs_total", {"reason": reason}) or 0.0


def test_a_class_held_by_another_application_does_not_stall_the_agent(pg_host: Settings, tmp_path: Path) -> None:
    """Another application's realtime row holds tenant-acme: the agent publishes the others, records
    them (`nodes`, live counts), says why it is not ready, and goes on following changes at once."""
    db = tmp_path / "node-r" / "realtime.sqlite3"
    db.parent.mkdir()
    with contextlib.closing(sqlite3.connect(db)) as other:  # not ooma-moh's: no ownership recorded
        other.execute(REALTIME_SCHEMA)
        other.execute("INSERT INTO musiconhold (name, mode, directory) VALUES ('tenant-acme', 'files', '/srv/x')")
        other.commit()
    upload(pg_host, "acme", 440, tmp_path)
    beta = upload(pg_host, "beta", 550, tmp_path)
    failed_before, refused_before = failures(), incomplete("classes_refused")
    with in_process_agent(pg_host, tmp_path) as (agent, registry):
        until("the first full sync", lambda: agent.syncs >= 1)
        until("the agent to follow changes", lambda: agent.problem != "starting: the first full sync is not done yet")
        assert agent.problem is not None and agent.problem.startswith("classes not published: tenant-acme"), (
            agent.problem
        )
        assert "row of that name that ooma-moh did not write" in agent.problem
        assert registry.live_on("tenant-beta", beta.version) == (1, 1)  # recorded as a success
        assert [(s.node_id, s.classes, s.last_error) for s in registry.statuses("tenant-", datetime.now(UTC))] == [
            ("node-r", 1, None)
        ]
        assert failures() == failed_before and incomplete("classes_refused") > refused_before
        gamma = upload(pg_host, "gamma", 660, tmp_path)  # followed: published long before a reconcile
        publisher = RealtimePublisher(db, "tenant-")
        until("gamma on the node", lambda: Path(publisher.current().get("tenant-gamma", "")).name == gamma.version)
        until("gamma recorded", lambda: registry.live_on("tenant-gamma", gamma.version) == (1, 1))
        assert agent.problem is not None and agent.problem.startswith("classes not published")
        assert failures() == failed_before


def test_a_pending_reload_does_not_stall_the_agent(pg_host: Settings, tmp_path: Path) -> None:
    """Static mode with Asterisk not answering the reload: the include file is written, the node's
    record keeps what Asterisk loaded (nothing) and says why, and changes are still followed."""
    from ooma_moh.lab import free_port

    upload(pg_host, "acme", 440, tmp_path)
    failed_before, pending_before = failures(), incomplete("reload_pending")
    conf = tmp_path / "node-r" / "classes.conf"
    with in_process_agent(pg_host, tmp_path, publish_mode="static", ari_url=f"http://127.0.0.1:{free_port()}") as (
        agent,
        registry,
    ):
        until("the agent to follow changes", lambda: agent.problem != "starting: the first full sync is not done yet")
        assert agent.problem is not None and agent.problem.startswith("Asterisk reload pending:"), agent.problem
        assert "[tenant-acme]" in conf.read_text()
        (status,) = registry.statuses("tenant-", datetime.now(UTC))
        assert status.classes == 0 and status.last_error is not None and "reload pending" in status.last_error
        assert failures() == failed_before and incomplete("reload_pending") > pending_before
        upload(pg_host, "beta", 550, tmp_path)
        until("beta in the include file", lambda: "[tenant-beta]" in conf.read_text())
        assert failures() == failed_before


def test_serve_http_is_not_ready_while_its_object_storage_is_out_of_reach(s3_settings: Settings) -> None:
    """Uploads cannot be stored without the blob store: `/readyz` says so (it said ready)."""
    from ooma_moh.lab import free_port

    gone = dataclasses.replace(s3_settings, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    token = cli(gone, "tokens", "create", "--operator").strip().splitlines()[-1]

    async def readiness(settings: Settings) -> tuple[int, str]:
        async with api(settings, token) as client, client.session.get(f"http://127.0.0.1:{client.port}/readyz") as r:
            return r.status, await r.text()

    status, said = asyncio.run(readiness(gone))
    assert status == 503 and said.startswith("blob store unreachable"), said
    assert asyncio.run(readiness(s3_settings)) == (200, "ready\n")


def test_after_postgresql_restarts_the_first_request_of_each_kind_succeeds(
    s3_settings: Settings, postgres: PostgresServer, tmp_path: Path
) -> None:
    """`pg_ctl restart -m fast` (a failover does the same to every open connection): the next
    GET, upload and `/readyz` of `serve http`, and the next read of a hold resolver that has been
    connected all along, each succeed first time — none fails once on its dead connection — and
    the status of the upload is read from the truth (no `error` about the registry)."""
    host = s3_settings
    token = cli(host, "tokens", "create", "--operator").strip().splitlines()[-1]
    data = tone(tmp_path / "a.mp3", 440, 3, "mp3").read_bytes()
    resolver = hold_resolver(host)

    async def scenario() -> None:
        async with api(host, token) as client:
            assert (await client.put("acme", data))[0] == 201
            assert (await client.wait_live("acme"))["status"]["state"] == "live"  # published before the restart
            assert resolver.resolve("acme") == Resolution("tenant-acme", None)
            ready = f"http://127.0.0.1:{client.port}/readyz"
            async with client.session.get(ready) as r:
                assert r.status == 200
            await asyncio.to_thread(postgres.stop_server, "fast")
            await asyncio.to_thread(postgres.start_server)
            async with client.session.get(ready) as r:
                assert (r.status, await r.text()) == (200, "ready\n")
            status, body = await client.get("acme")
            assert status == 200 and body["status"]["state"] != "error", body
            status, body = await client.put("acme", data)
            assert status == 201 and body["status"]["state"] != "error", body
            assert await asyncio.to_thread(resolver.resolve, "acme") == Resolution("tenant-acme", None)

    try:
        asyncio.run(scenario())
    finally:
        resolver.catalog.close()
