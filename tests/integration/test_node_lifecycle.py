"""Node lifecycle on the real cluster back end (issue 25): the session's PostgreSQL and S3 servers
(tests/conftest.py), real `ooma-moh agent` processes beating every 0.5 s, reconciling only every
10 minutes — so what they repair, they repair at a heartbeat. What the operator sees is read with
`ooma-moh nodes --json` and `show --json`, as an operator reads it.

- an agent killed with SIGKILL is `down` within 3 heartbeat intervals, not counted in "live on N
  of M" (a change goes `live` on the other node alone), and `nodes remove` retires it (refused for
  a live node); restarted, it registers again;
- a published version directory deleted, or a file altered in place, is repaired within one
  interval and recorded; a repair that cannot be done leaves the node `damaged` (and the class not
  counted live there) until it can;
- a second agent with a node id a live agent holds refuses to start; one started right after a
  SIGKILL waits for the old heartbeat to go stale, then takes over; after a clean stop at once.

The state rules themselves, on fakes: tests/unit/test_node_rules.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from ooma_moh.config import Settings, settings_environ
from ooma_moh.doctor.cluster import check_cluster
from ooma_moh.model import TenantMoh
from ooma_moh.nodestate import grace_s
from tests.disk import remount, tmpfs
from tests.integration.test_cluster import Node, show, upload
from tests.integration.test_http_api import cli

BEAT_S = 0.5  # node_heartbeat_s of these agents


def node(host: Settings, tmp_path: Path, name: str, beat_s: float = BEAT_S) -> Node:
    home = tmp_path / name
    return Node(
        dataclasses.replace(
            host,
            home=home,
            node_id=name,
            node_heartbeat_s=beat_s,
            agent_reconcile_s=600.0,
            moh_dir=home / "moh",
            realtime_db=home / "realtime.sqlite3",
            classes_conf=home / "classes.conf",
        )
    )


@pytest.fixture
def nodes(s3_settings: Settings, tmp_path: Path) -> Iterator[list[Node]]:
    """Two nodes with agents not started yet; killed afterwards, their logs free of tracebacks."""
    started = [node(s3_settings, tmp_path, name) for name in ("node-a", "node-b")]
    try:
        yield started
    finally:
        for each in started:
            each.stop(signal.SIGKILL)
    for each in started:
        if each.log.exists():
            assert "Traceback" not in each.log.read_text(), each.log.read_text()


def rows(host: Settings) -> dict[str, dict[str, Any]]:
    """`ooma-moh nodes --json`, by node."""
    return {r["node"]: r for r in json.loads(cli(host, "nodes", "--json"))}


def until(what: str, condition: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> float:
    """Seconds until ``condition()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(step)
    return time.monotonic() - start


def state(host: Settings, name: str) -> str | None:
    row = rows(host).get(name)
    return None if row is None else cast(str, row["state"])


def complete(directory: Path, tenant: TenantMoh) -> bool:
    """Every rendition of ``tenant`` in ``directory`` with its catalog sha256."""
    try:
        return all(
            hashlib.sha256((directory / f"moh.{r.extension}").read_bytes()).hexdigest() == r.sha256
            for r in tenant.renditions
        )
    except OSError:
        return False


def test_a_killed_agent_is_down_within_three_beats_and_can_be_retired(
    s3_settings: Settings, nodes: list[Node], tmp_path: Path
) -> None:
    host, (a, b) = s3_settings, nodes
    for each in nodes:
        each.start()
    acme = upload(host, "acme", 440, tmp_path)
    for each in nodes:
        each.wait_for({"tenant-acme": acme.version})
    until("both nodes live", lambda: {s["state"] for s in rows(host).values()} == {"live"})
    assert show(host, "acme")["nodes"] == {"live": 2, "of": 2}

    b.stop(signal.SIGKILL)
    down_after = until("node-b down", lambda: state(host, "node-b") == "down", step=0.02)
    print(f"SIGKILL -> `nodes` says down: {down_after:.2f} s (heartbeat {BEAT_S} s, grace {grace_s(BEAT_S):g} s)")
    assert down_after <= grace_s(BEAT_S) + 1.0  # the grace from its last beat, plus one `nodes` run
    until("node-a still live", lambda: state(host, "node-a") == "live")
    text = cli(host, "nodes")
    line_b = next(line for line in text.splitlines() if line.startswith("node-b"))
    assert " down " in line_b and "up to date" not in line_b and "silent" in line_b, text

    # a change: node-a alone plays it, and that is everyone counted
    changed = upload(host, "acme", 660, tmp_path)
    a.wait_for({"tenant-acme": changed.version})
    until("the change live on 1 of 1", lambda: show(host, "acme")["nodes"] == {"live": 1, "of": 1})
    assert rows(host)["node-b"]["behind"] == 1  # and the down node says what it misses

    # doctor on node-b: its agent is down, with what to do; on node-a: all well
    until("doctor sees node-b down", lambda: "1 down, 1 live" in check_cluster(b.settings)[0].found)
    found = {f.check: f for f in check_cluster(b.settings)}
    assert found["registry"].status == "ok", found
    assert found["agent"].status == "fail" and "node-b is down" in found["agent"].found, found
    assert "systemctl start ooma-moh-agent" in found["agent"].advice and "sync" not in found["agent"].advice
    assert found["behind"].status == "warn" and "1 tenant(s)" in found["behind"].found, found
    assert {f.check: f.status for f in check_cluster(a.settings)} == {"registry": "ok", "agent": "ok", "behind": "ok"}

    # retire: refused for the live node, done for the down one, idempotent
    refused = cli(host, "nodes", "remove", "node-a", code=1)
    assert refused == ""
    assert "node-a" in rows(host)
    assert json.loads(cli(host, "nodes", "remove", "node-b", "--json")) == {"node": "node-b", "removed": True}
    assert cli(host, "nodes", "remove", "node-b") == "no node node-b: nothing to remove\n"
    assert set(rows(host)) == {"node-a"}

    b.start()  # back: it registers again and catches up
    b.wait_for({"tenant-acme": changed.version})
    until("node-b live again", lambda: state(host, "node-b") == "live")
    assert show(host, "acme")["nodes"] == {"live": 2, "of": 2}


def test_nodes_remove_of_a_live_node_says_why(s3_settings: Settings, nodes: list[Node]) -> None:
    host, a = s3_settings, nodes[0]
    a.start()
    until("node-a live", lambda: state(host, "node-a") == "live")
    done = subprocess.run(  # as an operator runs it: its one error line and status
        [sys.executable, "-m", "ooma_moh", "nodes", "remove", "node-a"],
        env={**os.environ, **settings_environ(host)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == "", done
    (line,) = done.stderr.splitlines()
    assert line.startswith("Error: node node-a is live: its agent (pid ") and line.endswith("or use --force"), line
    forced = json.loads(cli(host, "nodes", "remove", "node-a", "--force", "--json"))
    assert forced == {"node": "node-a", "removed": True}
    until("node-a registered again by its running agent", lambda: state(host, "node-a") == "live")


def test_damaged_directories_are_repaired_within_one_beat(
    s3_settings: Settings, nodes: list[Node], tmp_path: Path
) -> None:
    host, a = s3_settings, nodes[0]
    acme = upload(host, "acme", 440, tmp_path)  # before the agent: no notification sync to come
    a.start()
    a.wait_for({"tenant-acme": acme.version})
    until("node-a live", lambda: state(host, "node-a") == "live")
    version_dir = a.settings.moh_dir / "tenant-acme" / acme.version
    assert complete(version_dir, acme)

    shutil.rmtree(version_dir)  # by hand: callers would hear silence
    repaired_after = until("the directory back", lambda: complete(version_dir, acme), step=0.01)
    print(f"version directory deleted -> back, whole: {repaired_after:.2f} s (heartbeat {BEAT_S} s)")
    assert repaired_after <= BEAT_S + 1.0  # the next beat, plus the re-publication (and a busy machine)
    until("the repair recorded", lambda: rows(host)["node-a"]["repaired"] is not None)
    until("node-a live", lambda: state(host, "node-a") == "live")
    row = rows(host)["node-a"]
    assert row["damage"] is None, row
    assert row["repaired"] == f"tenant-acme/{acme.version}: directory missing" and row["repaired_at"], row

    sln16 = version_dir / "moh.sln16"
    size = sln16.stat().st_size
    with open(sln16, "r+b") as fh:  # altered in place, same size: a link to the cached blob, damaged too
        fh.write(b"\x7f" * 4096)
    assert sln16.stat().st_size == size and not complete(version_dir, acme)
    altered_after = until("the file whole again", lambda: complete(version_dir, acme), step=0.01)
    print(f"file altered in place -> whole again: {altered_after:.2f} s")
    assert altered_after <= BEAT_S + 1.5  # plus one download of the blob from S3, checked
    until("the repair recorded", lambda: "altered" in (rows(host)["node-a"]["repaired"] or ""))
    assert rows(host)["node-a"]["repaired"] == f"tenant-acme/{acme.version}: moh.sln16 altered"


def test_a_repair_that_cannot_be_done_leaves_the_node_damaged(
    root: None, s3_settings: Settings, nodes: list[Node], tmp_path: Path
) -> None:
    """The MOH directory's file system goes read-only after a version directory was lost: the node
    is `damaged` (the class not counted live there) until the file system is writable again, and
    repaired within one heartbeat after that."""
    host, a = s3_settings, nodes[0]
    acme = upload(host, "acme", 440, tmp_path)
    with tmpfs(a.settings.moh_dir, 16 * 1024 * 1024) as moh:
        a.start()
        a.wait_for({"tenant-acme": acme.version})
        until("node-a live", lambda: state(host, "node-a") == "live")
        version_dir = moh / "tenant-acme" / acme.version
        shutil.rmtree(version_dir)
        remount(moh, "ro")
        try:
            until("node-a damaged", lambda: "repair failed" in (rows(host)["node-a"]["damage"] or ""))
            row = rows(host)["node-a"]
            assert row["state"] == "damaged", row
            assert row["damage"].startswith(f"tenant-acme/{acme.version}: directory missing; repair failed:"), row
            assert "read-only" in row["damage"], row
            assert show(host, "acme")["nodes"] == {"live": 0, "of": 1}  # not counted live where it is damaged
            assert "DAMAGED tenant-acme" in cli(host, "nodes")
            found = {f.check: f for f in check_cluster(a.settings)}
            assert found["agent"].status == "fail" and "has not repaired them" in found["agent"].found, found
        finally:
            remount(moh, "rw")
        fixed_after = until("the directory back", lambda: complete(version_dir, acme), step=0.01)
        print(f"file system writable again -> directory back: {fixed_after:.2f} s")
        assert fixed_after <= BEAT_S + 1.0
        until("node-a live again", lambda: state(host, "node-a") == "live")
        assert show(host, "acme")["nodes"] == {"live": 1, "of": 1}
        assert rows(host)["node-a"]["repaired"] == f"tenant-acme/{acme.version}: directory missing"
        a.stop(signal.SIGKILL)  # before the file system goes


def holds(host: Settings, proc: subprocess.Popen[bytes] | None) -> bool:
    """Whether the process ``proc`` holds node-a (`nodes --json`'s holder: "pid N on HOST")."""
    return proc is not None and (rows(host)["node-a"]["holder"] or "").startswith(f"pid {proc.pid} on ")


def test_one_live_agent_per_node_id(s3_settings: Settings, nodes: list[Node], tmp_path: Path) -> None:
    host, a = s3_settings, nodes[0]
    a.settings = dataclasses.replace(a.settings, node_heartbeat_s=1.0)  # a margin for a loaded machine
    a.start()
    until("node-a live", lambda: state(host, "node-a") == "live")
    assert holds(host, a.proc)

    # a second agent with the id, elsewhere: refused while the first is live
    twin = node(host, tmp_path / "elsewhere", "node-a", beat_s=1.0)
    started = time.monotonic()
    twin.start()
    try:
        assert twin.proc is not None
        code = twin.proc.wait(30)
    finally:
        twin.stop(signal.SIGKILL)
    refused_after = time.monotonic() - started
    errors = [line for line in twin.log.read_text().splitlines() if line.startswith("Error:")]
    print(f"second agent with node-a's id refused in {refused_after:.2f} s: {errors}")
    assert code == 1, twin.log.read_text()
    assert len(errors) == 1 and errors[0].startswith("Error: another agent holds node id 'node-a' and is live (pid")
    assert "OOMA_MOH_NODE_ID" in errors[0]
    assert holds(host, a.proc) and a.alive()  # untouched

    # killed and restarted at once, as systemd does: the dead holder is replaced at once
    a.stop(signal.SIGKILL)
    restarted = time.monotonic()
    a.start()
    took_over = until("the new process holding node-a", lambda: holds(host, a.proc), timeout=grace_s(1.0))
    print(f"SIGKILL, restart -> the new agent holds the id: {took_over:.2f} s after the restart")
    assert "its last agent (pid" in a.log.read_text() and "has ended; taking over" in a.log.read_text()
    assert time.monotonic() - restarted < grace_s(1.0) + 5

    # frozen (alive but silent): another agent waits for the grace, then takes over; thawed, the
    # first finds its id taken and stops with one error line
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    other = node(host, tmp_path / "elsewhere", "node-a", beat_s=1.0)
    try:
        other.start()
        waited = until("the other agent holding node-a", lambda: holds(host, other.proc), timeout=grace_s(1.0) + 15)
        print(f"holder frozen -> another agent took over after {waited:.2f} s (grace {grace_s(1.0):g} s)")
        assert "is held by another agent" in other.log.read_text()
        a.proc.send_signal(signal.SIGCONT)
        assert a.proc.wait(30) == 1
        assert a.log.read_text().splitlines()[-1].startswith("Error: another agent holds node id 'node-a'")
        assert other.alive() and holds(host, other.proc)
        other.stop()  # SIGTERM: the id released at once
        assert other.proc is not None and other.proc.returncode == 0
    finally:
        other.stop(signal.SIGKILL)
    row = rows(host)["node-a"]
    assert row["state"] == "down" and row["heartbeat_age_s"] is None, row
    a.start()
    until("node-a live again", lambda: state(host, "node-a") == "live" and holds(host, a.proc))
    assert a.log.read_text().count("is held by another agent") == 0  # never waited: free each time
