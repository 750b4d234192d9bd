"""`ooma-moh doctor` against the real lab Asterisk (issue 13): all ok on a healthy lab, and each
fault injected — ARI password wrong, realtime mapping missing (and the realtime database Asterisk
does not read), MOH directory unreadable, ffmpeg missing — gives a FAIL with its own advice and
exit status 1. Every fault is undone in a ``finally``, and the lab is checked healthy again.

The CLI runs as a child process, as an operator runs it. The rules without Asterisk are tested in
tests/unit/test_doctor_rules.py."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ooma_moh.app import build_syncer
from ooma_moh.config import Settings, settings_environ
from ooma_moh.lab import LabAsterisk
from ooma_moh.publish import REALTIME_SCHEMA, RealtimePublisher
from ooma_moh.service import MohService
from tests.audio import tone

ROOT = Path(__file__).resolve().parents[2]
ALL_CHECKS = {"ffmpeg", "catalog", "blobs", "ari", "modules", "moh-dir"}
REALTIME_CHECKS = {"realtime-db", "realtime-mapping"}


def doctor(
    settings: Settings, *args: str, code: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``ooma-moh doctor ARGS`` in a child process; assert its exit status."""
    environ = {**os.environ, **settings_environ(settings), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "ooma_moh", "doctor", *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def findings(settings: Settings, *args: str, code: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``doctor --json``'s findings by check name."""
    data = json.loads(doctor(settings, "--json", *args, code=code, env=env).stdout)
    assert all(set(f) == {"check", "status", "found", "advice"} for f in data), data
    assert all(f["advice"] for f in data if f["status"] != "ok"), data
    return {f["check"]: f for f in data}


CLUSTER_CHECKS = {"registry", "agent", "behind"}


def expected_checks(settings: Settings, call: bool) -> set[str]:
    return (
        ALL_CHECKS
        | (REALTIME_CHECKS if settings.publish_mode == "realtime" else set())
        | ({"call"} if call else set())
        | (CLUSTER_CHECKS if settings.database_url else set())
    )


@contextlib.contextmanager
def node_agent(settings: Settings) -> Iterator[Settings]:
    """On the cluster back end, the lab as a cluster node: its agent running (in a thread, node id
    ``lab``), live and caught up; ``settings`` with that node id (doctor checks that agent). On the
    embedded one, ``settings`` as they are."""
    if not settings.database_url:
        yield settings
        return
    from ooma_moh.app import make_agent
    from ooma_moh.service import utcnow
    from ooma_moh.storage.nodes import NodeRegistry

    node = dataclasses.replace(settings, node_id="lab", node_heartbeat_s=1.0)
    agent = make_agent(node, "lab")
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    registry = NodeRegistry(node.database_url)
    try:
        deadline = time.monotonic() + 60
        while [(s.node_id, s.state.value) for s in registry.statuses(node.class_prefix, utcnow())] != [("lab", "live")]:
            assert time.monotonic() < deadline and thread.is_alive(), "the lab's agent never went live"
            time.sleep(0.1)
        yield node
    finally:
        registry.close()
        agent.stop()
        thread.join(30)
    assert not thread.is_alive()


def assert_all_ok(settings: Settings, call: bool = False) -> None:
    found = findings(settings, *(["--call"] if call else []), code=0)
    assert set(found) == expected_checks(settings, call), found
    assert {name: f["status"] for name, f in found.items()} == dict.fromkeys(found, "ok"), found


def no_probe_left(settings: Settings) -> None:
    """Doctor removed its probe directory and realtime row."""
    assert not list(settings.moh_dir.glob(".doctor-*"))
    if settings.realtime_db.exists():
        with contextlib.closing(sqlite3.connect(settings.realtime_db)) as db, db:
            assert db.execute("SELECT name FROM musiconhold WHERE name LIKE 'ooma-moh.doctor.%'").fetchall() == []


def publish(service: MohService, settings: Settings, tmp: Path, tenant: str = "acme") -> None:
    """Upload a tone for ``tenant`` and sync: the MOH directory, a class, the realtime database."""
    service.upload(tenant, tone(tmp / f"{tenant}.wav", 440.0, seconds=4), accept_disclaimer=True, accepted_by="tester")
    build_syncer(settings, service).run(None)


@pytest.mark.every_backend  # doctor's catalog and blob probes on PostgreSQL + S3 too
def test_healthy_lab_is_all_ok(lab_settings: Settings, lab_service: MohService, tmp_path: Path) -> None:
    publish(lab_service, lab_settings, tmp_path)
    with node_agent(lab_settings) as settings:  # a cluster node has its agent running
        assert_all_ok(settings, call=True)  # realtime: the probe class; static: tenant-acme
        no_probe_left(settings)
        text = doctor(settings, code=0).stdout.splitlines()
    assert len(text) == len(expected_checks(settings, call=False)), text
    assert all(line.startswith("ok   ") and "To do:" not in line for line in text), text


@pytest.mark.parametrize("mode", ["realtime"])
def test_call_leaves_nothing_behind(lab_settings: Settings) -> None:
    """A node nothing was published to yet: no MOH directory, and a realtime database without the
    musiconhold table (as Asterisk leaves the file it opens). `doctor --call` makes both for its
    probe, plays it, and removes both."""
    db = lab_settings.realtime_db

    def tables() -> set[str]:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    assert not lab_settings.moh_dir.exists()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP TABLE IF EXISTS musiconhold")
    before = tables()
    try:
        found = findings(lab_settings, "--call", code=0)
        assert found["call"]["status"] == "ok" and found["realtime-mapping"]["status"] == "ok", found
        assert found["moh-dir"]["status"] == "warn" and "does not exist yet" in found["moh-dir"]["found"], found
        assert not lab_settings.moh_dir.exists()
        assert tables() == before and "musiconhold" not in before
    finally:
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(REALTIME_SCHEMA)  # as the lab had it


def test_wrong_ari_password(lab_settings: Settings) -> None:
    lab_settings.moh_dir.mkdir()  # as the first sync makes it
    wrong = dataclasses.replace(lab_settings, ari_password="not-the-password")
    found = findings(wrong, "--call", code=1)
    assert found["ari"]["status"] == "fail"
    assert "ARI password wrong" in found["ari"]["found"] and "401" in found["ari"]["found"]
    assert "OOMA_MOH_ARI_PASSWORD" in found["ari"]["advice"] and "ari.conf" in found["ari"]["advice"]
    assert found["call"]["status"] == "warn" and found["modules"]["status"] == "warn"  # not checked
    assert [f for f in found.values() if f["status"] == "fail"] == [found["ari"]]
    lines = doctor(wrong, code=1).stdout.splitlines()
    assert any(line.startswith("FAIL ari ") and "To do: set OOMA_MOH_ARI_PASSWORD" in line for line in lines), lines
    assert_all_ok(lab_settings)


def test_connection_refused(lab_settings: Settings) -> None:
    from ooma_moh.lab import free_port

    nowhere = dataclasses.replace(lab_settings, ari_url=f"http://127.0.0.1:{free_port()}")
    found = findings(nowhere, code=1)
    assert found["ari"]["status"] == "fail" and "not reachable" in found["ari"]["found"]
    assert "http.conf" in found["ari"]["advice"]


@pytest.mark.parametrize("mode", ["realtime"])
def test_realtime_mapping_missing(lab: LabAsterisk, lab_settings: Settings, lab_service: MohService) -> None:
    build_syncer(lab_settings, lab_service).run(None)  # the realtime database exists, as after any sync
    lab_settings.moh_dir.mkdir(exist_ok=True)
    extconfig = lab.etc / "extconfig.conf"
    original = extconfig.read_text()
    assert "musiconhold => sqlite3,ooma-moh,musiconhold" in original
    try:
        extconfig.write_text("\n".join(line for line in original.splitlines() if not line.startswith("musiconhold")))
        lab.cli("module reload extconfig")
        assert "musiconhold" not in lab.cli("core show config mappings")
        found = findings(lab_settings, "--call", code=1)
        mapping = found["realtime-mapping"]
        assert mapping["status"] == "fail" and "realtime mapping of musiconhold is missing" in mapping["found"]
        assert "extconfig.conf" in mapping["advice"] and str(lab_settings.realtime_db) in mapping["advice"]
        call = found["call"]  # Asterisk played default instead of the probe class
        assert call["status"] == "fail" and "falls back to default" in call["found"], call
        assert {n for n, f in found.items() if f["status"] == "fail"} == {"realtime-mapping", "call"}, found
        no_probe_left(lab_settings)
    finally:
        extconfig.write_text(original)
        lab.cli("module reload extconfig")
    assert "musiconhold" in lab.cli("core show config mappings")
    assert_all_ok(lab_settings, call=True)


@pytest.mark.parametrize("mode", ["realtime"])
def test_realtime_db_asterisk_does_not_read(lab_settings: Settings, lab_service: MohService, tmp_path: Path) -> None:
    """OOMA_MOH_REALTIME_DB names another file than res_config_sqlite3.conf's dbfile."""
    other = dataclasses.replace(lab_settings, realtime_db=tmp_path / "elsewhere.sqlite3")
    build_syncer(other, lab_service).run(None)  # sync writes there happily
    found = findings(other, code=1)
    assert found["realtime-mapping"]["status"] == "fail"
    assert "res_config_sqlite3 reads another file" in found["realtime-mapping"]["found"]
    assert found["realtime-db"]["status"] == "ok"  # the file itself is fine


def test_moh_dir_unreadable(lab_settings: Settings, lab_service: MohService, tmp_path: Path) -> None:
    publish(lab_service, lab_settings, tmp_path)
    moh_dir = lab_settings.moh_dir
    try:
        os.chmod(moh_dir, 0)
        found = findings(lab_settings, code=1)
        problem = found["moh-dir"]
        assert problem["status"] == "fail" and f"cannot read {moh_dir}" in problem["found"], problem
        assert "mode 0000" in problem["found"] and "denies read+search" in problem["found"], problem
        assert "0755" in problem["advice"], problem
        assert {n for n, f in found.items() if f["status"] == "fail"} == {"moh-dir"}, found
    finally:
        os.chmod(moh_dir, 0o755)
    class_file = next(moh_dir.glob("*/*/moh.sln16"))
    try:
        os.chmod(class_file, 0o200)  # one rendition of one class
        problem = findings(lab_settings, code=1)["moh-dir"]
        assert problem["status"] == "fail" and "cannot read 1 entries" in problem["found"], problem
        assert f"{class_file} (mode 0200" in problem["found"], problem
    finally:
        os.chmod(class_file, 0o644)
    assert_all_ok(lab_settings)


def test_ffmpeg_missing(lab_settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    found = findings(lab_settings, code=1, env={"PATH": str(empty)})
    assert found["ffmpeg"]["status"] == "fail" and "ffmpeg not found" in found["ffmpeg"]["found"]
    assert "apt-get install ffmpeg" in found["ffmpeg"]["advice"] and "OOMA_MOH_FFMPEG" in found["ffmpeg"]["advice"]
    assert {n for n, f in found.items() if f["status"] == "fail"} == {"ffmpeg"}, found


def test_missing_home_is_a_finding_and_creates_nothing(lab: LabAsterisk, tmp_path: Path) -> None:
    typo = Settings(**{**lab.settings_overrides(), "home": tmp_path / "no-such-home"})
    found = findings(typo, code=1)
    assert found["catalog"]["status"] == "fail" and "OOMA_MOH_HOME" in found["catalog"]["advice"]
    assert not (tmp_path / "no-such-home").exists()


def test_realtime_db_this_user_cannot_write(lab: LabAsterisk) -> None:
    """Asterisk created the realtime database before ooma-moh's first sync (as its own user, mode
    0644): doctor, run as the service user, says that this user cannot write it — with `sync`'s own
    advice — and that its probe row could not be written, not that ARI is read-only."""
    uid = next(u for u in range(64200, 65000) if not _uid_taken(u))
    scratch = Path(tempfile.mkdtemp(prefix="ooma-moh-doctor-"))  # not tmp_path: its parents are 0700
    try:
        scratch.chmod(0o755)
        home = scratch / "home"
        (home / "moh").mkdir(parents=True)
        for path in (home, home / "moh"):
            os.chown(path, uid, uid)
        settings = Settings(**{**lab.settings_overrides(), "home": home}, publish_mode="realtime")
        db = settings.realtime_db
        RealtimePublisher(db, settings.class_prefix).current()  # as Asterisk opening it first: root's
        db.chmod(0o644)
        env = {
            **settings_environ(settings),
            "HOME": str(scratch),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}",
        }
        proc = subprocess.run(
            [
                shutil.which("setpriv") or "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--",
                "/usr/bin/python3",
                "-m",
                "ooma_moh",
                "doctor",
                "--json",
            ],
            env=env,
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
        found = {f["check"]: f for f in json.loads(proc.stdout)}
        own = found["realtime-db"]
        assert own["status"] == "fail", own
        assert f"this user (uid {uid}) cannot write {db}" in own["found"], own
        assert f"mode 0644: not writable by uid {uid}" in own["found"], own
        assert own["advice"] == not_writable_advice(db), own  # sync's own words
        mapping = found["realtime-mapping"]
        assert mapping["status"] == "fail" and "cannot write a probe row" in mapping["found"], mapping
        assert "read_only" not in mapping["advice"] and "chmod 0664" in mapping["advice"], mapping
        assert found["ari"]["status"] == "ok" and found["modules"]["status"] == "ok", found
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def not_writable_advice(db: Path) -> str:
    return f"chown <ooma-moh user>:asterisk {db}; chmod 0664 {db} (docs/operations.md, users and permissions)"
