"""Pure parts of sync and verify: the plan, the static include, CLI output parsers."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from ooma_moh.asterisk_cli import parse_moh_classes, parse_realtime_row
from ooma_moh.errors import ClassTaken
from ooma_moh.model import MohSetting, Rendition, TenantMoh
from ooma_moh.mohdir import MohDirectory
from ooma_moh.publish import REALTIME_SCHEMA, RealtimePublisher, StaticPublisher
from ooma_moh.storage import BlobStore
from ooma_moh.sync import Change, SyncReport, plan_sync

T = TenantMoh("t", MohSetting.FILE, renditions=(Rendition("sln", 8000, 2, "ab" * 32),))


def test_plan_classifies_every_class() -> None:
    desired = {"tenant-a": ("/m/a/1", T), "tenant-b": ("/m/b/2", T), "tenant-c": ("/m/c/1", T)}
    published = {"tenant-a": "/m/a/1", "tenant-b": "/m/b/1", "tenant-d": "/m/d/1"}
    plan = {p.moh_class: p.change for p in plan_sync(desired, published, None)}
    assert plan == {
        "tenant-a": Change.UNCHANGED,
        "tenant-b": Change.CHANGED,
        "tenant-c": Change.ADDED,
        "tenant-d": Change.REMOVED,
    }


def test_plan_of_named_tenants_leaves_others_alone() -> None:
    published = {"tenant-a": "/m/a/1", "tenant-d": "/m/d/1"}
    plan = plan_sync({}, published, scope={"tenant-a"})
    assert [(p.moh_class, p.change) for p in plan] == [("tenant-a", Change.REMOVED)]


def test_version_follows_content() -> None:
    other = TenantMoh("u", MohSetting.FILE, renditions=T.renditions)
    changed = TenantMoh("t", MohSetting.FILE, renditions=(Rendition("sln", 8000, 2, "cd" * 32),))
    assert T.version == other.version != changed.version and len(T.version) == 16


def test_static_include_roundtrip(tmp_path: Path) -> None:
    publisher = StaticPublisher(tmp_path / "c.conf", "tenant-")
    publisher.apply({"tenant-b": "/m/b/1", "tenant-a": "/m/a/1"}, set())
    text = (tmp_path / "c.conf").read_text()
    assert text.index("[tenant-a]") < text.index("[tenant-b]") and "mode=files" in text
    publisher.apply({"tenant-a": "/m/a/2"}, {"tenant-b"})
    assert publisher.current() == {"tenant-a": "/m/a/2"}


def test_mohdir_retires_then_deletes(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    moh = MohDirectory(tmp_path / "moh", blobs)
    for version in ("v1", "v2"):
        (tmp_path / "moh" / "tenant-a" / version).mkdir(parents=True)
    keep = {"tenant-a": str(tmp_path / "moh" / "tenant-a" / "v2")}
    assert moh.collect(keep, retain_s=60, now=1000.0) == (1, 0)
    assert moh.collect(keep, retain_s=60, now=1030.0) == (0, 0)
    assert moh.collect(keep, retain_s=60, now=1061.0) == (0, 1)
    assert moh.versions() == {"tenant-a": ["v2"]}


def test_parse_realtime_row() -> None:
    out = (
        "                   Column Name  Column Value                  \n"
        "          --------------------  --------------------          \n"
        "                          name  tenant-acme                   \n"
        "                          mode  files                         \n"
        "                     directory  /var/lib/ooma-moh/moh/tenant-acme/abc\n"
        "                   application                                \n"
    )
    row = parse_realtime_row(out)
    assert row == {
        "name": "tenant-acme",
        "mode": "files",
        "directory": "/var/lib/ooma-moh/moh/tenant-acme/abc",
        "application": "",
    }
    assert parse_realtime_row("No rows found matching search criteria.\n") is None


def test_parse_moh_classes() -> None:
    out = "Class: default\n\tMode: files\n\tDirectory: /x\nClass: tenant-a\n\tMode: files\n\tDirectory: /m/a/1\n"
    assert parse_moh_classes(out) == {
        "default": {"Mode": "files", "Directory": "/x"},
        "tenant-a": {"Mode": "files", "Directory": "/m/a/1"},
    }


def musiconhold(db_path: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return dict(db.execute("SELECT name, directory FROM musiconhold"))


def add_rows(db_path: Path, rows: dict[str, str]) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:  # closed, and committed first
        db.execute(REALTIME_SCHEMA)
        db.executemany("INSERT INTO musiconhold (name, mode, directory) VALUES (?, 'files', ?)", rows.items())


def test_realtime_publisher_touches_only_rows_it_wrote(tmp_path: Path) -> None:
    db_path = tmp_path / "realtime.sqlite3"
    publisher = RealtimePublisher(db_path, "tenant-", moh_dir=tmp_path / "moh")
    publisher.apply({"tenant-a": "/m/a/1"}, set())
    foreign = {"tenant-foreign": "/other/foreign", "hold-other": "/other/hold"}
    add_rows(db_path, foreign)
    assert publisher.current() == {"tenant-a": "/m/a/1"}
    assert publisher.foreign(["tenant-a", "tenant-foreign", "tenant-b"]) == {"tenant-foreign"}
    publisher.apply({}, {"tenant-a", "tenant-foreign"})  # a removal of a row not ours does nothing
    assert musiconhold(db_path) == foreign
    with pytest.raises(ClassTaken, match="tenant-foreign: the realtime database"):
        publisher.apply({"tenant-b": "/m/b/1", "tenant-foreign": "/m/f/1"}, set())
    assert musiconhold(db_path) == foreign  # all or nothing: tenant-b was not published either
    # a row of ours deleted by hand: its name is not ours any more once someone else takes it
    publisher.apply({"tenant-c": "/m/c/1"}, set())
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("DELETE FROM musiconhold WHERE name = 'tenant-c'")
    publisher.apply({"tenant-d": "/m/d/1"}, set())
    add_rows(db_path, {"tenant-c": "/other/c"})
    assert publisher.current() == {"tenant-d": "/m/d/1"} and publisher.foreign(["tenant-c"]) == {"tenant-c"}
    # a row deleted by hand before the trigger that forgets ownership existed: a full sync's sweep
    publisher.apply({"tenant-e": "/m/e/1"}, set())
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("DROP TRIGGER ooma_moh_owned_forget")
        db.execute("DELETE FROM musiconhold WHERE name = 'tenant-e'")

    def owned() -> set[str]:
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            return {name for (name,) in db.execute("SELECT name FROM ooma_moh_owned")}

    publisher.apply({}, set())
    assert "tenant-e" in owned()  # a switch of named tenants does not scan the table for it...
    publisher.apply({}, set(), sweep=True)
    assert "tenant-e" not in owned()  # ... a full sync's last switch does
    add_rows(db_path, {"tenant-e": "/other/e"})
    assert publisher.foreign(["tenant-e"]) == {"tenant-e"}


def test_realtime_rows_of_an_earlier_version_are_adopted_by_directory(tmp_path: Path) -> None:
    db_path, moh = tmp_path / "realtime.sqlite3", tmp_path / "moh"
    add_rows(
        db_path,
        {
            "tenant-a": f"{moh}/tenant-a/v1",
            "tenant-b": f"{moh}/../elsewhere/tenant-b/v1",
            "tenant-c": f"{moh}-other/tenant-c/v1",
            "tenant-d": "/srv/d",
        },
    )
    assert RealtimePublisher(db_path, "tenant-").current() == {}  # no moh_dir known: nothing adopted
    publisher = RealtimePublisher(db_path, "tenant-", moh_dir=moh)
    assert publisher.current() == {"tenant-a": f"{moh}/tenant-a/v1"}
    publisher.apply({}, {"tenant-a", "tenant-b", "tenant-c", "tenant-d"})
    assert set(musiconhold(db_path)) == {"tenant-b", "tenant-c", "tenant-d"}
    # adoption happens once: a row added later under moh_dir by someone else is not ours
    add_rows(db_path, {"tenant-e": f"{moh}/tenant-e/v1"})
    assert publisher.current() == {} and publisher.foreign(["tenant-e"]) == {"tenant-e"}


def test_report_says_what_became_of_the_reload() -> None:
    assert SyncReport([]).reload == "not needed"
    assert SyncReport([], reloaded=True).reload == "done"
    assert SyncReport([], reload_pending=True).reload == "pending"
