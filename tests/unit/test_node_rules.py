"""The node lifecycle's rules without a database (issue 25): a node's state and its order
(:mod:`ooma_moh.nodestate`), the node id a container must set, the manifest's check of what a
node publishes and what a repair removes (:mod:`ooma_moh.nodecheck`, on a temporary directory),
and an agent's hold on its node id, its heartbeat and its repairs (:mod:`ooma_moh.nodelife`) on a
stand-in registry. The same on PostgreSQL with real agents: tests/integration/test_node_lifecycle.py."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ooma_moh.agent import run_agent
from ooma_moh.cli.cluster import _line
from ooma_moh.config import Settings
from ooma_moh.doctor.findings import how_to_publish
from ooma_moh.errors import ConfigError, OomaMohError, StorageError
from ooma_moh.model import Rendition
from ooma_moh.nodecheck import Damage, Published, prepare_repair
from ooma_moh.nodelife import NodeLife, NodeTaken, ended, ephemeral_host, here, node_id_to_use
from ooma_moh.nodestate import Holder, NodeState, Process, grace_s, is_fresh, node_state

# -- the state and its order ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "age, interval, damaged, behind, expected",
    [
        (None, 10.0, False, 0, NodeState.DOWN),  # no heartbeat since its agent stopped
        (29.9, None, False, 0, NodeState.DOWN),  # an interval unknown is never fresh
        (30.0, 10.0, True, 3, NodeState.DOWN),  # rule 1 first: silent 3 intervals, whatever else
        (29.9, 10.0, True, 3, NodeState.DAMAGED),  # rule 2 before behind
        (0.1, 10.0, False, 2, NodeState.BEHIND),
        (0.1, 10.0, False, 0, NodeState.LIVE),
        (1.49, 0.5, False, 0, NodeState.LIVE),
        (1.5, 0.5, False, 0, NodeState.DOWN),
    ],
)
def test_node_state_in_its_order(
    age: float | None, interval: float | None, damaged: bool, behind: int, expected: NodeState
) -> None:
    assert node_state(heartbeat_age_s=age, heartbeat_s=interval, damaged=damaged, behind=behind) is expected


def test_the_grace_is_three_intervals() -> None:
    assert grace_s(10.0) == 30.0 and grace_s(0.5) == 1.5
    assert is_fresh(29.999, 10.0) and not is_fresh(30.0, 10.0) and not is_fresh(None, 10.0)
    held = Holder("abc", "pid 1 on h", datetime.now(UTC), 2.0, 1.0)
    assert held.fresh and not Holder("abc", None, None, None, None).fresh


def test_the_heartbeat_setting_is_checked(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).node_heartbeat_s == 10.0
    for bad in (0.0, 0.05, 3601.0):
        with pytest.raises(ConfigError, match="node_heartbeat_s must be between 0.1 and 3600"):
            Settings(home=tmp_path, node_heartbeat_s=bad)


def test_a_down_node_never_reads_up_to_date() -> None:
    row: dict[str, Any] = {
        "node": "n1",
        "state": "down",
        "heartbeat_age_s": 45.25,
        "heartbeat_s": 10.0,
        "classes": 3,
        "behind": 0,
        "lag_s": None,
        "last_success": None,
        "damage": None,
        "repaired": None,
        "last_error": None,
    }
    assert "silent 45.2 s (down after 30 s)" in _line(row) and "up to date" not in _line(row)
    assert "no heartbeat (agent stopped)" in _line({**row, "heartbeat_age_s": None})
    live = _line({**row, "state": "live", "heartbeat_age_s": 1.0})
    assert "heartbeat 1.0 s ago" in live and "up to date" in live


# -- the node id ----------------------------------------------------------------------------------


def test_a_container_host_name_is_not_a_node_id(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(path: str) -> bool:
        return False

    assert ephemeral_host("asterisk-7", nothing) is None
    assert ephemeral_host("3f4e5d6c7b8a", nothing) == "it looks like a container id"
    assert ephemeral_host("a" * 64, nothing) == "it looks like a container id"
    assert ephemeral_host("3f4e5d6c7b8", nothing) is None  # 11 digits: a name like any other
    assert ephemeral_host("asterisk-7", {"/run/.containerenv"}.__contains__) == (
        "this host is a container (/run/.containerenv exists)"
    )
    monkeypatch.setattr("ooma_moh.nodelife.socket.gethostname", lambda: "3f4e5d6c7b8a")
    with pytest.raises(OomaMohError) as refused:
        node_id_to_use("", nothing)
    text = str(refused.value)
    assert "'3f4e5d6c7b8a'" in text and "set OOMA_MOH_NODE_ID (or --node-id)" in text and "\n" not in text
    assert node_id_to_use("3f4e5d6c7b8a", nothing) == "3f4e5d6c7b8a"  # said explicitly: the operator's choice
    monkeypatch.setattr("ooma_moh.nodelife.socket.gethostname", lambda: "asterisk-7")
    assert node_id_to_use("", nothing) == "asterisk-7"
    with pytest.raises(OomaMohError, match="this host is a container"):
        node_id_to_use("", {"/.dockerenv"}.__contains__)


def test_the_agent_refuses_to_start_without_a_stable_node_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / ".dockerenv"
    marker.touch()
    monkeypatch.setattr("ooma_moh.nodelife.CONTAINER_MARKERS", (str(marker),))
    settings = Settings(home=tmp_path / "home", database_url="postgresql://nowhere.invalid/x")
    with pytest.raises(OomaMohError, match="no node id: the default is the host name"):
        run_agent(settings, "")  # before any connection: nowhere.invalid is never looked up


# -- the manifest -----------------------------------------------------------------------------------


def published(tmp_path: Path, contents: dict[str, bytes]) -> tuple[Path, list[Rendition]]:
    directory = tmp_path / "moh" / "tenant-acme" / "v1"
    directory.mkdir(parents=True)
    renditions = []
    for ext, data in contents.items():
        (directory / f"moh.{ext}").write_bytes(data)
        renditions.append(Rendition(ext, 8000, len(data), hashlib.sha256(data).hexdigest()))
    return directory, renditions


def test_the_manifest_sees_what_is_missing_resized_or_altered(tmp_path: Path) -> None:
    directory, renditions = published(tmp_path, {"sln": b"a" * 100, "ulaw": b"b" * 50})
    manifest = Published()
    manifest.note("tenant-acme", directory, renditions)
    assert manifest.check() == []
    os.utime(directory / "moh.sln", (1, 1))  # a new identity, the same bytes: not damage
    assert manifest.check() == []
    (directory / "moh.sln").write_bytes(b"c" * 100)  # same size, other bytes
    (directory / "moh.ulaw").write_bytes(b"b" * 49)
    (damage,) = manifest.check()
    assert damage.text() == "tenant-acme/v1: moh.sln altered, moh.ulaw size 49, expected 50"
    assert [name for name, _ in damage.wrong] == ["moh.sln", "moh.ulaw"]
    (directory / "moh.ulaw").unlink()
    assert manifest.check()[0].problems == ("moh.sln altered", "moh.ulaw missing")
    manifest.note("tenant-acme", directory, renditions)  # noted again: the identities it had are kept
    assert manifest.check()[0].problems == ("moh.sln altered", "moh.ulaw missing")
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    assert manifest.check() == [Damage("tenant-acme", directory, ("directory missing",))]
    manifest.keep_only([])
    assert manifest.check() == [] and manifest.classes() == set()


def test_a_repair_removes_the_wrong_file_and_its_cached_blob_when_it_is_that_file(tmp_path: Path) -> None:
    directory, renditions = published(tmp_path, {"sln": b"a" * 100})
    sha = renditions[0].sha256
    blob = tmp_path / "blobs" / sha
    blob.parent.mkdir()
    os.link(directory / "moh.sln", blob)  # as sync places it: a hard link
    damage = Damage("tenant-acme", directory, ("moh.sln altered",), (("moh.sln", sha),))
    with pytest.raises(StorageError, match="only copy, which is damaged too"):
        prepare_repair(damage, lambda s: tmp_path / "blobs" / s, cache=False)
    assert blob.exists() and (directory / "moh.sln").exists()  # the only copy: left for the operator
    prepare_repair(damage, lambda s: tmp_path / "blobs" / s, cache=True)
    assert not blob.exists() and not (directory / "moh.sln").exists()  # fetched again, checked
    (directory / "moh.sln").write_bytes(b"x" * 100)  # a copy, not the blob
    blob.write_bytes(b"a" * 100)
    prepare_repair(damage, lambda s: tmp_path / "blobs" / s, cache=False)
    assert blob.exists() and not (directory / "moh.sln").exists()


# -- an agent's hold on its node id ---------------------------------------------------------------


class Book:
    """A stand-in registry: ``holders`` are what successive claims find (None: taken)."""

    def __init__(self, holders: list[Holder | None], beats: bool = True) -> None:
        self.holders, self.beats = holders, beats
        self.checks: list[tuple[str | None, list[str], str | None]] = []
        self.claims = 0
        self.replaced: list[str | None] = []

    def claim(self, node_id: str, me: Process, heartbeat_s: float, replacing: str | None = None) -> Holder | None:
        self.claims += 1
        self.replaced.append(replacing)
        return self.holders.pop(0) if self.holders else None

    def heartbeat(self, node_id: str, instance_id: str, heartbeat_s: float) -> bool:
        return self.beats

    def release(self, node_id: str, instance_id: str) -> None:
        pass

    def record_check(
        self, node_id: str, instance_id: str, damage: str | None, classes: list[str], repaired: str | None
    ) -> None:
        self.checks.append((damage, classes, repaired))


def life(tmp_path: Path, **fields: Any) -> NodeLife:
    settings = Settings(home=tmp_path / "home", node_heartbeat_s=0.2, **fields)
    return NodeLife(settings, "n1", threading.Event(), lambda: None)


def other(beat_at: datetime) -> Holder:
    return Holder("other", "pid 9 on h2", beat_at, 0.1, 0.2)


def test_a_live_holder_makes_the_agent_refuse(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    book = Book([other(now), other(now), other(now + timedelta(seconds=0.2))])  # it beats again
    with pytest.raises(NodeTaken) as taken:
        life(tmp_path).claim(book)
    assert "another agent holds node id 'n1' and is live (pid 9 on h2" in str(taken.value)
    assert "OOMA_MOH_NODE_ID" in str(taken.value) and book.claims == 3


def test_a_silent_holder_is_waited_for_then_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(UTC)
    book = Book([other(now), other(now), None])  # killed: never beats again, then stale
    with caplog.at_level(logging.WARNING, logger="ooma_moh.agent"):
        assert life(tmp_path).claim(book) is True
    assert book.claims == 3
    assert "held by another agent (pid 9 on h2" in caplog.text
    assert Book([]).claims == 0 and life(tmp_path).claim(Book([])) is True  # free: at once


def test_a_holder_known_to_have_ended_is_replaced_at_once(tmp_path: Path) -> None:
    me = Process("mine", "pid 10 on h", 10, "boot/pid:[1]")

    def holder(pid: int | None, where: str | None) -> Holder:
        return Holder("old", f"pid {pid} on h", datetime.now(UTC), 0.1, 10.0, pid, where)

    def nothing_runs(pid: int) -> bool:
        return False

    assert ended(holder(11, "boot/pid:[1]"), me, nothing_runs)  # same boot and namespace, pid gone
    assert not ended(holder(11, "boot/pid:[1]"), me, lambda pid: True)  # its pid runs (perhaps reused)
    assert not ended(holder(11, "boot/pid:[2]"), me, nothing_runs)  # another container: nobody knows
    assert not ended(holder(11, "other-boot/pid:[1]"), me, nothing_runs)  # another host, or rebooted
    assert not ended(holder(10, "boot/pid:[1]"), me, nothing_runs)  # our own pid: not provable
    assert not ended(holder(None, None), me, nothing_runs)
    assert not ended(holder(11, None), Process("mine", "", 10, None), nothing_runs)
    assert here() is not None  # Linux: boot id and pid namespace readable
    node = life(tmp_path)
    gone = Holder("old", "pid 1 on h", datetime.now(UTC), 0.1, 10.0, 2**22 + 1, node.me.where)  # no such pid
    book = Book([gone, None])
    assert node.claim(book) is True and book.replaced == [None, "old"] and book.claims == 2  # no wait


def test_an_id_taken_while_running_stops_the_agent_and_a_removed_one_is_registered_again(tmp_path: Path) -> None:
    node = life(tmp_path)
    node.heartbeat(Book([], beats=True))
    node.heartbeat(Book([None], beats=False))  # removed by `nodes remove --force`: registered again
    with pytest.raises(NodeTaken):
        node.heartbeat(Book([other(datetime.now(UTC))], beats=False))


def test_damage_is_recorded_repaired_and_the_repair_recorded(tmp_path: Path) -> None:
    directory, renditions = published(tmp_path, {"sln": b"a" * 100})
    node = life(tmp_path)
    node.manifest.note("tenant-acme", directory, renditions)
    (directory / "moh.sln").unlink()
    book = Book([])
    failing = [True]

    def republish(tenants: list[str]) -> None:
        assert tenants == ["acme"]
        if failing[0]:
            raise StorageError("disk_full", "the server's disk is full (while writing)")
        (directory / "moh.sln").write_bytes(b"a" * 100)

    node.check(book, lambda s: tmp_path / "blobs" / s, republish)
    found = "tenant-acme/v1: moh.sln missing"
    assert book.checks == [
        (found, ["tenant-acme"], None),
        (f"{found}; repair failed: the server's disk is full (while writing)", ["tenant-acme"], None),
    ]
    assert node.damage is not None and not node.check_due()
    failing[0] = False
    node.check(book, lambda s: tmp_path / "blobs" / s, republish)  # the next heartbeat
    assert book.checks[-1] == (None, [], found) and node.damage is None
    assert len(book.checks) == 3  # the same damage was not recorded again before the repair
    node.check(book, lambda s: tmp_path / "blobs" / s, republish)
    assert len(book.checks) == 3  # nothing found, nothing to say


def test_publishing_advice_names_the_agent_on_a_cluster(tmp_path: Path) -> None:
    assert how_to_publish(Settings(home=tmp_path)) == "run `ooma-moh sync --all`"
    cluster = how_to_publish(Settings(home=tmp_path, database_url="postgresql://db/x"))
    assert "ooma-moh agent" in cluster and "sync" not in cluster
