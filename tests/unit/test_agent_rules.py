"""The agent's loop without a database: the watchdog's liveness (a stuck sync is not alive, one
that reports progress is), and an unexpected exception (a bug, an error nobody translated) is
logged with its traceback and backed off from instead of ending the process. The catalog, the
node registry and the syncer are stand-ins; the same paths on PostgreSQL are in
tests/integration/test_cluster.py."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, cast

import pytest

from ooma_moh import metrics
from ooma_moh.agent import BACKOFF_S, Agent, _watchdog, watchdog_window
from ooma_moh.config import Settings
from ooma_moh.errors import OomaMohError
from ooma_moh.media_fake import FakeConverter, fake_audio
from ooma_moh.mohdir import MohDirectory
from ooma_moh.nodestate import Holder, Process
from ooma_moh.service import MohService
from ooma_moh.storage import BlobStore
from ooma_moh.storage.memory import MemoryCatalog
from ooma_moh.sync import Syncer, SyncReport
from tests.unit.fake_publisher import RecordedPublisher


def make_agent(tmp_path: Path, syncer: BlockingSyncer | None = None) -> Agent:
    """An agent on stand-ins: ``syncer`` (none: a sync fails at once) and :class:`Registry`."""

    def open_syncer() -> Syncer:
        if syncer is None:
            raise OomaMohError("no syncer in this test")
        return cast(Syncer, syncer)  # run() and published() are all the agent calls

    settings = Settings(home=tmp_path / "home", database_url="postgresql://nowhere.invalid/x")
    return Agent(settings, "node-u", open_syncer=open_syncer, open_registry=Registry)


class Registry:
    """Stands in for NodeRegistry: records what the agent records."""

    successes: list[dict[str, str]] = []
    scopes: list[set[str] | None] = []
    errors: list[str] = []

    def __init__(self, url: str = "") -> None:
        pass

    def record_success(
        self,
        node_id: str,
        published: dict[str, str],
        at: Any,
        *,
        scope: Collection[str] | None = None,
        instance_id: str | None = None,
    ) -> bool:
        self.successes.append(published)
        self.scopes.append(None if scope is None else set(scope))
        return instance_id is not None

    def record_error(self, node_id: str, error: str, at: Any) -> None:
        self.errors.append(error)

    def claim(self, node_id: str, me: Process, heartbeat_s: float, replacing: str | None = None) -> Holder | None:
        return None  # always free

    def heartbeat(self, node_id: str, instance_id: str, heartbeat_s: float) -> bool:
        return True

    def release(self, node_id: str, instance_id: str) -> None:
        pass

    def record_check(
        self, node_id: str, instance_id: str, damage: str | None, classes: list[str], repaired: str | None
    ) -> None:
        pass

    def listen(self) -> Listener:
        return Listener()

    def close(self) -> None:
        pass


class Listener:
    def changes(self, timeout: float) -> set[str]:
        return set()

    def close(self) -> None:
        pass


class BlockingSyncer:
    """A sync that waits for ``release``, calling ``heartbeat`` every ``step`` while ``progress``
    is set (a long catch-up) and never while it is clear (stuck on a dead connection)."""

    def __init__(self, progress: bool) -> None:
        self.progress = progress
        self.started = threading.Event()
        self.release = threading.Event()
        self.beats = 0

    def run(self, tenants: list[str] | None, *, heartbeat: Any = None, **_: Any) -> SyncReport:
        self.started.set()
        while not self.release.wait(0.01):
            if self.progress and heartbeat is not None:
                heartbeat()
                self.beats += 1
        return SyncReport([])

    def published(self, classes: Collection[str] | None = None) -> dict[str, str]:
        return {}

    def classes_of(self, tenants: Iterable[str] | None) -> set[str] | None:
        return None if tenants is None else {f"tenant-{t}" for t in tenants}


def syncing(tmp_path: Path, syncer: BlockingSyncer) -> tuple[Agent, threading.Thread]:
    agent = make_agent(tmp_path, syncer)
    thread = threading.Thread(target=agent.sync, args=(None,), daemon=True)
    thread.start()
    assert syncer.started.wait(10)
    return agent, thread


def test_a_stuck_sync_is_not_alive(tmp_path: Path) -> None:
    syncer = BlockingSyncer(progress=False)
    agent, thread = syncing(tmp_path, syncer)
    try:
        agent.heartbeat = time.monotonic() - 1000  # as if the sync had hung for that long
        assert not agent.alive(within_s=60)  # a sync under way is no exemption any more
    finally:
        syncer.release.set()
        thread.join(10)
    assert agent.alive(within_s=60)  # the sync's end is a heartbeat


def test_a_long_sync_that_makes_progress_is_alive(tmp_path: Path) -> None:
    syncer = BlockingSyncer(progress=True)
    agent, thread = syncing(tmp_path, syncer)
    try:
        agent.heartbeat = time.monotonic() - 1000
        deadline = time.monotonic() + 10
        while syncer.beats < 2:  # the sync's next step refreshes the heartbeat
            assert time.monotonic() < deadline, "the sync never reported progress"
            time.sleep(0.01)
        assert agent.alive(within_s=60)
    finally:
        syncer.release.set()
        thread.join(10)


def test_watchdog_pings_only_while_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notified: list[str] = []
    monkeypatch.setattr("ooma_moh.agent.systemd.notify", notified.append)
    agent = make_agent(tmp_path)
    rounds = iter([False, False, True])  # two rounds, then the agent stops
    monkeypatch.setattr(agent, "wait_stopped", lambda timeout: next(rounds))
    agent.heartbeat = time.monotonic() - watchdog_window(15) - 1  # stale: stuck
    _watchdog(agent, interval=15)
    assert notified == []
    rounds = iter([False, False, True])
    agent.beat()
    _watchdog(agent, interval=15)
    assert notified == ["WATCHDOG=1", "WATCHDOG=1"]
    assert watchdog_window(15) == 60 and watchdog_window(1) == BACKOFF_S[-1] + 5


def test_wait_stopped_is_the_public_stop_signal(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    assert agent.wait_stopped(0) is False
    agent.stop()
    assert agent.wait_stopped(0) is True


def test_an_unexpected_exception_is_logged_and_backed_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent(tmp_path)
    Registry.errors = []
    calls: list[list[str] | None] = []

    def sync(tenants: list[str] | None) -> None:
        calls.append(tenants)
        if len(calls) == 1:
            raise KeyError("a bug")  # not an OomaMohError, not a psycopg error
        agent.stop()  # the second round: the agent survived the first

    waits: list[float] = []
    monkeypatch.setattr(agent, "sync", sync)
    # records the delay and answers False (not stopped): append's None is the point of the `or`
    monkeypatch.setattr(agent._stop, "wait", lambda delay: waits.append(delay) or False)  # type: ignore[func-returns-value]
    before = metrics.REGISTRY.get_sample_value("ooma_moh_agent_failures_total") or 0.0
    with caplog.at_level(logging.WARNING, logger="ooma_moh.agent"):
        agent.run()
    assert calls == [None, None]
    assert waits == [BACKOFF_S[0]]
    assert metrics.REGISTRY.get_sample_value("ooma_moh_agent_failures_total") == before + 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None  # log.exception: with its traceback
    assert "unexpected error" in errors[0].getMessage()
    assert Registry.errors == ["unexpected error (KeyError): 'a bug'; retrying"]


class Feed:
    """The catalog's change notifications: ``announce`` a tenant; the agent stops once it has
    synced every announced change."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def changes(self, timeout: float) -> set[str]:
        found, self.pending = set(self.pending), []
        if not found:
            time.sleep(min(timeout, 0.01))
        return found

    def close(self) -> None:
        pass


def test_the_agent_publishes_every_tenant_then_follows_each_change(tmp_path: Path) -> None:
    """The agent's loop on in-memory fakes (catalog, converter, publisher, registry): a full sync
    first, then each announced change synced alone and recorded as what the node publishes."""
    settings = Settings(home=tmp_path / "home", moh_dir=tmp_path / "moh", database_url="postgresql://nowhere.invalid/x")
    catalog, blobs, publisher, feed = MemoryCatalog(), BlobStore(settings.blob_dir), RecordedPublisher(), Feed()
    service = MohService(settings, catalog, blobs, FakeConverter())
    for tenant in ("acme", "beta"):
        (tmp_path / f"{tenant}.fake").write_bytes(fake_audio(1500))
        service.upload(tenant, tmp_path / f"{tenant}.fake", accept_disclaimer=True, accepted_by="test")
    syncer = Syncer(settings, catalog, MohDirectory(settings.moh_dir, blobs), publisher, reload=lambda: None)
    Registry.successes, Registry.scopes = [], []

    class FollowingRegistry(Registry):
        def listen(self) -> Feed:  # type: ignore[override]  # the feed this test drives
            return feed

    agent = Agent(settings, "node-u", open_syncer=lambda: syncer, open_registry=FollowingRegistry)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(Registry.successes) < 1:
            assert time.monotonic() < deadline, "no full sync"
            time.sleep(0.01)
        first = dict(Registry.successes[0])
        assert set(first) == {"tenant-acme", "tenant-beta"}
        acme = catalog.get("acme")
        assert acme is not None and first["tenant-acme"] == acme.version
        assert (settings.moh_dir / "tenant-acme" / acme.version / "moh.sln16").stat().st_size == 48000
        service.delete("acme")
        feed.pending.append("acme")
        while len(Registry.successes) < 2:
            assert time.monotonic() < deadline, "the change was not synced"
            time.sleep(0.01)
        # acme is back on default music; the change is recorded for acme's class alone (beta's
        # record is left as it was)
        assert Registry.successes[1] == {} and Registry.scopes[1:] == [{"tenant-acme"}]
        assert Registry.scopes[0] is None  # the first sync: every class
        assert agent.problem is None and agent.syncs == 2
    finally:
        agent.stop()
        thread.join(10)
