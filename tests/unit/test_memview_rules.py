"""The rules of ooma_moh/memview.py, in its docstring's order, on fake marks, a fake clock and
a fake notification feed; then the two local marks on real files (SQLite's data_version, a
renamed file). No server: tests/unit/test_http_api_rules.py drives them through the API and
tests/integration/test_http_api.py on real SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Hashable
from pathlib import Path

import pytest

from ooma_moh import memview
from ooma_moh.errors import StorageError
from ooma_moh.memview import ABSENT, COALESCE_S, STALE_S, FileMark, Notifications, SqliteMark, StatusMemory


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeMark:
    """A source whose mark the test moves; ``reads`` counts how often it was read."""

    def __init__(self) -> None:
        self.value: Hashable | None = 0
        self.reads = 0

    def read(self) -> Hashable | None:
        self.reads += 1
        return self.value

    def close(self) -> None:
        pass


class FakeFeed:
    """Notifications the test queues; each turn's ping and wait move the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.queued, self.fail = clock, set[str](), False

    def ping(self) -> None:
        if self.fail:
            raise StorageError("unavailable", "connection lost")
        self.clock.now += 0.001

    def changes(self, timeout: float, burst_s: float | None = None) -> set[str]:
        assert burst_s == 0  # never wait for the rest of a burst: void entries at once
        self.clock.now += timeout
        got, self.queued = self.queued, set()
        return got

    def close(self) -> None:
        pass


def remembered(memory: StatusMemory, tenant: str, state: object, changes: int = 0) -> None:
    """A read of ``tenant`` that finds ``state`` with nothing moving meanwhile."""
    memory.keep(memory.ticket(tenant, changes), tenant, changes, state)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_rule_2_a_moved_mark_forgets_everything(clock: Clock) -> None:
    catalog, asterisk = FakeMark(), FakeMark()
    memory = StatusMemory([catalog, asterisk], clock=clock)
    remembered(memory, "acme", "A")
    remembered(memory, "beta", "B")
    assert memory.recall("acme", 0) == "A" and memory.recall("beta", 0) == "B"
    asterisk.value = 1  # a publication by anyone: what Asterisk reads changed
    clock.now += COALESCE_S
    assert memory.recall("acme", 0) is None and memory.recall("beta", 0) is None
    remembered(memory, "acme", "A2")
    catalog.value = 1  # the CLI committed to the catalog
    clock.now += COALESCE_S
    assert memory.recall("acme", 0) is None


def test_rule_2_marks_are_read_at_most_every_coalesce_s(clock: Clock) -> None:
    mark = FakeMark()
    memory = StatusMemory([mark], clock=clock)
    remembered(memory, "acme", "A")
    reads = mark.reads
    for _ in range(100):  # 100 GETs in the same instant: one reading of the marks
        assert memory.recall("acme", 0) == "A"
    assert mark.reads == reads
    mark.value = 1
    clock.now += COALESCE_S * 0.9
    assert memory.recall("acme", 0) == "A"  # committed less than COALESCE_S ago: may not be seen yet
    clock.now += COALESCE_S * 0.1
    assert memory.recall("acme", 0) is None and mark.reads == reads + 1


def test_rule_3_an_unreadable_mark_means_read_and_keep_nothing(clock: Clock) -> None:
    mark = FakeMark()
    memory = StatusMemory([FakeMark(), mark], clock=clock)
    remembered(memory, "acme", "A")
    mark.value = None  # busy with a commit, or an error
    clock.now += COALESCE_S
    assert memory.recall("acme", 0) is None
    assert memory.ticket("acme", 0) is None
    remembered(memory, "acme", "A2")
    assert memory.recall("acme", 0) is None  # not kept while unavailable, and not coalesced
    mark.value = 0  # readable again, unmoved (the commit was abandoned): what was kept still holds
    assert memory.recall("acme", 0) == "A"
    mark.value = None
    clock.now += COALESCE_S
    assert memory.recall("acme", 0) is None
    mark.value = 1  # readable again, moved
    assert memory.recall("acme", 0) is None


def test_rule_3_a_listener_not_heard_within_stale_s_means_read(clock: Clock) -> None:
    notifications = Notifications(lambda: FakeFeed(clock), clock=clock)
    feed = FakeFeed(clock)
    memory = StatusMemory([], notifications, credentials=False, clock=clock)
    assert memory.ticket("acme", 0) is None  # not listening yet
    notifications.connected()
    notifications.turn(feed)
    remembered(memory, "acme", "A")
    assert memory.recall("acme", 0) == "A"
    clock.now = notifications.heard_at + STALE_S + 0.001  # type: ignore[operator]
    assert memory.recall("acme", 0) is None
    notifications.turn(feed)
    assert memory.recall("acme", 0) == "A"  # heard again: nothing changed meanwhile
    feed.fail = True
    with pytest.raises(StorageError):
        notifications.turn(feed)
    assert not notifications.fresh() and memory.recall("acme", 0) is None


def test_notifications_void_only_their_tenant_and_date_from_the_turns_start(clock: Clock) -> None:
    notifications = Notifications(lambda: FakeFeed(clock), clock=clock)
    feed = FakeFeed(clock)
    memory = StatusMemory([], notifications, credentials=False, clock=clock)
    notifications.connected()
    notifications.turn(feed)
    remembered(memory, "acme", "A")
    remembered(memory, "beta", "B")
    started = clock.now
    feed.queued = {"acme"}
    notifications.turn(feed)
    assert notifications.heard_at == started  # a commit after the turn's start may be unheard
    assert memory.recall("acme", 0) is None and memory.recall("beta", 0) == "B"
    notifications.connected()  # a new connection: what changed while none listened is unknown
    notifications.turn(feed)
    assert memory.recall("beta", 0) is None


def test_rule_4_a_read_during_which_a_source_moved_is_not_kept(clock: Clock) -> None:
    mark = FakeMark()
    memory = StatusMemory([mark], clock=clock)
    ticket = memory.ticket("acme", 0)
    mark.value = 1  # committed while the read ran, less than COALESCE_S after the ticket
    memory.keep(ticket, "acme", 0, "half seen")
    assert memory.recall("acme", 0) is None
    notifications = Notifications(lambda: FakeFeed(clock), clock=clock)
    feed = FakeFeed(clock)
    listened = StatusMemory([], notifications, credentials=False, clock=clock)
    notifications.connected()
    notifications.turn(feed)
    ticket = listened.ticket("acme", 0)
    feed.queued = {"acme"}
    notifications.turn(feed)
    listened.keep(ticket, "acme", 0, "half seen")
    assert listened.recall("acme", 0) is None


def test_rule_5_this_servers_own_change_voids_the_entry_at_once(clock: Clock) -> None:
    memory = StatusMemory([FakeMark()], clock=clock)  # the marks never move (a slow notification)
    remembered(memory, "acme", "before the upload", changes=3)
    assert memory.recall("acme", 3) == "before the upload"
    assert memory.recall("acme", 4) is None  # Publications.changes moved: an upload, a publication
    ticket = memory.ticket("acme", 4)
    memory.keep(ticket, "acme", 5, "read while a publication ended")
    assert memory.recall("acme", 5) is None


def test_rule_6_credentials_kept_only_when_the_marks_cover_them(clock: Clock) -> None:
    mark = FakeMark()
    memory = StatusMemory([mark], clock=clock)
    memory.keep_credential(memory.credential_ticket(), "token", "omh_1_secret", "principal")
    memory.keep_credential(memory.credential_ticket(), "token", "omh_2_wrong", None)
    assert memory.recall_credential("token", "omh_1_secret") == "principal"
    assert memory.recall_credential("token", "omh_2_wrong") is None  # failures are never kept
    assert memory.recall_credential("session", "omh_1_secret") is None
    assert all("secret" not in str(key) for key in memory._credentials)  # only digests
    mark.value = 1  # revoked from the CLI
    clock.now += COALESCE_S
    assert memory.recall_credential("token", "omh_1_secret") is None
    postgres = StatusMemory([mark], credentials=False, clock=clock)
    postgres.keep_credential(postgres.credential_ticket(), "token", "omh_1_secret", "principal")
    assert postgres.recall_credential("token", "omh_1_secret") is None


def test_rule_6_at_most_max_kept_the_first_kept_goes_first(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memview, "MAX_KEPT", 3)
    memory = StatusMemory([FakeMark()], clock=clock)
    for tenant in ("a", "b", "c"):
        remembered(memory, tenant, tenant.upper())
    remembered(memory, "b", "B2")  # kept again: nothing dropped
    remembered(memory, "d", "D")
    assert [memory.recall(t, 0) for t in "abcd"] == [None, "B2", "C", "D"]


def test_listener_connects_again_after_a_failure(clock: Clock) -> None:
    lost, second = FakeFeed(clock), FakeFeed(clock)
    lost.fail = True
    feeds = iter([lost, second])
    notifications = Notifications(lambda: next(feeds), clock=clock)
    second.ping = notifications._stop.set  # type: ignore[method-assign]  # its first turn ends the loop
    notifications.run(retry_s=0)
    assert notifications.connection == 2 and notifications.heard_at is not None


def test_sqlite_mark_moves_with_each_commit_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    assert SqliteMark(path, absent_ok=True).read() == ABSENT
    assert SqliteMark(path, absent_ok=False).read() is None  # the catalog gone: read
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x)")
    mark = SqliteMark(path, absent_ok=False)
    first = mark.read()
    assert first is not None and mark.read() == first
    writer.execute("INSERT INTO t VALUES (1)")
    second = mark.read()
    assert second not in (None, first)
    writer.execute("BEGIN EXCLUSIVE")  # a commit in progress (rollback journal): busy, not waited
    writer.execute("INSERT INTO t VALUES (2)")
    assert mark.read() is None
    writer.execute("COMMIT")
    assert mark.read() not in (None, first, second)
    writer.close()
    replacement = tmp_path / "new.sqlite"
    sqlite3.connect(replacement).close()
    os.replace(replacement, path)  # restored from a backup: another file
    assert mark.read() not in (None, first, second)
    mark.close()


def test_file_mark_moves_when_the_include_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "classes.conf"
    mark = FileMark(path)
    assert mark.read() == ABSENT
    path.write_text("[tenant-acme]\n")
    first = mark.read()
    assert first not in (None, ABSENT) and mark.read() == first
    new = tmp_path / ".classes.conf.tmp"
    new.write_text("[tenant-acme]\n")  # same size, a rename as publish.write_atomically does
    os.replace(new, path)
    assert mark.read() != first
