"""`ooma-moh sync` and `verify` against the real lab Asterisk, in both publication modes.

Each test listens: a Local channel plays the class into a recorder, and every 100 ms window of
the recording is matched to the tone of a tenant (or of the lab's `default` class).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ooma_moh.app import build_syncer
from ooma_moh.cli import main
from ooma_moh.config import Settings, settings_environ
from ooma_moh.lab import DEFAULT_TONE, LabAsterisk
from ooma_moh.service import MohService
from tests.audio import decode_raw, tone
from tests.integration.conftest import longest_silence, settings_env, tones_heard
from tests.integration.test_conversion import MUSIC, generated, quietest_window

A, B, C = 440.0, 660.0, 880.0
ROOT = Path(__file__).resolve().parents[2]


def cli(settings: Settings, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), env=settings_environ(settings), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def upload(service: MohService, tenant: str, freq: float, tmp: Path, name: str | None = None) -> None:
    source = tone(tmp / f"{tenant}-{int(freq)}.wav", freq, seconds=4)
    service.upload(tenant, source, accept_disclaimer=True, accepted_by="tester", original_name=name)


def assert_hears(windows: list[float | None], expected: float) -> None:
    heard = [w for w in windows[1:] if w is not None]
    assert heard, "the recording is silent"
    assert all(w == expected for w in heard), windows
    assert longest_silence(windows) <= 1, windows


def musiconhold_reloads(lab: LabAsterisk) -> int:
    text = (lab.shared / "log" / "messages.log").read_text(errors="replace")
    return len(re.findall(r"Reloading module 'res_musiconhold\.so'|Music On Hold.*[Rr]eload", text))


def test_each_tenant_hears_its_own_class(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    upload(lab_service, "alpha", A, tmp_path)
    upload(lab_service, "beta", B, tmp_path)
    upload(lab_service, "gamma", C, tmp_path)
    lab_service.delete("gamma")
    out = json.loads(cli(lab_settings, "sync", "--all", "--json"))
    assert out["summary"] == {"added": 2, "changed": 0, "removed": 0, "unchanged": 0}
    assert out["files_written"] == 10
    assert out["reloaded"] is (lab_settings.publish_mode == "static")

    assert_hears(tones_heard(lab.record("alpha", 2, "tenant-alpha"), [A, B, C]), A)
    assert_hears(tones_heard(lab.record("beta", 2, "tenant-beta"), [A, B, C]), B)
    gamma_class = lab_service.show("gamma").moh_class(lab_settings.class_prefix)
    assert gamma_class == "default"
    assert_hears(tones_heard(lab.record("gamma", 2, gamma_class), [A, B, C]), DEFAULT_TONE)
    # a class that was never published falls back to default: Asterisk gives no error
    assert_hears(tones_heard(lab.record("gamma2", 2, "tenant-gamma"), [A, B, C]), DEFAULT_TONE)
    assert cli(lab_settings, "verify").strip() == "catalog, disk and Asterisk agree"
    if lab_settings.publish_mode == "realtime":  # the loop is the file's, not the mode's: once
        assert_loops_seamlessly(lab, lab_service, tmp_path)


def assert_loops_seamlessly(lab: LabAsterisk, service: MohService, tmp: Path) -> None:
    """A held caller hears a 3 s music-like file loop at least twice: around each loop point no
    100 ms window of silence, and no sample-to-sample jump larger than the music's own."""
    source = generated(tmp / "music.wav", MUSIC, seconds=3, channels=2)
    result = service.upload("delta", source, accept_disclaimer=True, accepted_by="tester")
    cli(service.settings, "sync", "delta")
    music, rate = decode_raw(service.blobs.path(result.rendition("sln").sha256), "sln")
    loop = len(music)
    with wave.open(str(lab.record("delta", 3 * loop // rate + 2, "tenant-delta"))) as wav:
        assert wav.getframerate() == rate  # the recorder's 8 kHz: the .sln rendition is played
        heard = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768.0
    head = music[: rate // 5]  # where the file's start is heard: its best match in the recording
    match = np.correlate(heard[: len(heard) - loop], head, mode="valid")
    start = int(np.argmax(match))
    assert np.max(np.abs(heard[start : start + len(head)] - head)) < 0.01  # found: heard as written
    seams = [p for p in range(start % loop, len(heard) - rate // 10, loop) if p > rate // 2]
    assert len(seams) >= 2, (start, loop, len(heard))
    within = float(np.max(np.abs(np.diff(music))))
    for seam in seams:
        quietest = quietest_window(heard[seam - rate // 2 : seam + rate // 2], rate)
        assert quietest > 10 ** (service.settings.silence_threshold_db / 20), (seam, quietest)
        jump = float(np.max(np.abs(np.diff(heard[seam - rate // 100 : seam + rate // 100]))))
        assert jump <= within, (seam, jump, within)


def test_replace_while_a_caller_listens(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    upload(lab_service, "alpha", A, tmp_path)
    cli(lab_settings, "sync", "alpha")
    reloads_before = musiconhold_reloads(lab)
    listening = lab.start_recording("listener", 6, "tenant-alpha")
    deadline = time.monotonic() + 20
    while not listening.exists() or listening.stat().st_size < 44 + 16000 * 2:  # 2 s recorded
        assert time.monotonic() < deadline, "the first caller never started listening"
        time.sleep(0.05)

    upload(lab_service, "alpha", C, tmp_path)
    out = json.loads(cli(lab_settings, "sync", "alpha", "--json"))
    assert out["summary"]["changed"] == 1 and out["old_versions_retired"] == 1
    newcomer = tones_heard(lab.record("newcomer", 2, "tenant-alpha"), [A, C])
    assert_hears(newcomer, C)

    first = tones_heard(lab.wait_recording(listening), [A, C])
    assert longest_silence(first) <= 1, first  # no gap over 200 ms
    assert all(w == A for w in first[1:]), first  # still the old file list, never cut off
    if lab_settings.publish_mode == "realtime":
        assert out["reloaded"] is False and musiconhold_reloads(lab) == reloads_before
    else:
        assert out["reloaded"] is True

    # the retired version goes at a later sync, once nobody can still be playing it
    again = json.loads(cli(lab_settings, "sync", "alpha", "--json"))
    assert again["old_versions_deleted"] == 1
    assert len(list((lab_settings.moh_dir / "tenant-alpha").iterdir())) == 1


def test_deleted_tenant_hears_default(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    upload(lab_service, "alpha", A, tmp_path)
    cli(lab_settings, "sync", "--all")
    assert_hears(tones_heard(lab.record("before", 2, "tenant-alpha"), [A]), A)
    lab_service.delete("alpha")
    out = json.loads(cli(lab_settings, "sync", "--all", "--json"))
    assert out["summary"]["removed"] == 1
    assert_hears(tones_heard(lab.record("after", 2, "tenant-alpha"), [A]), DEFAULT_TONE)
    assert cli(lab_settings, "verify").strip() == "catalog, disk and Asterisk agree"


def snapshot(settings: Settings) -> dict[str, object]:
    """Everything a sync may write: MOH tree (names, mtimes), published data."""
    tree = {str(p.relative_to(settings.moh_dir)): p.stat().st_mtime_ns for p in settings.moh_dir.rglob("*")}
    published: object  # the include file and its mtime, or the realtime rows
    if settings.publish_mode == "static":
        published = (settings.classes_conf.read_text(), settings.classes_conf.stat().st_mtime_ns)
    else:
        with contextlib.closing(sqlite3.connect(settings.realtime_db)) as db, db:
            published = db.execute("SELECT * FROM musiconhold ORDER BY name").fetchall()
    return {"tree": tree, "published": published}


def test_second_sync_writes_nothing(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    upload(lab_service, "alpha", A, tmp_path)
    upload(lab_service, "beta", B, tmp_path)
    first = json.loads(cli(lab_settings, "sync", "--all", "--json"))
    assert first["files_written"] == 10
    before, reloads = snapshot(lab_settings), musiconhold_reloads(lab)
    second = json.loads(cli(lab_settings, "sync", "--all", "--json"))
    assert second["summary"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 2}
    assert (second["files_written"], second["published"], second["reloaded"]) == (0, False, False)
    assert snapshot(lab_settings) == before
    assert musiconhold_reloads(lab) == reloads
    dry = json.loads(cli(lab_settings, "sync", "--all", "--dry-run", "--json"))
    assert dry["dry_run"] and dry["summary"]["unchanged"] == 2


def test_hostile_names_cannot_inject(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    hostile = "x]\n[evil]\nmode=custom\napplication=/bin/sh'); DROP TABLE musiconhold; --.mp3"
    upload(lab_service, "alpha", A, tmp_path, name=hostile)
    cli(lab_settings, "sync", "--all")
    if lab_settings.publish_mode == "static":
        text = lab_settings.classes_conf.read_text()
        assert "evil" not in text and "custom" not in text and "application" not in text
        assert re.findall(r"^\[([^\]]+)\]$", text, re.M) == ["tenant-alpha"]
    with contextlib.closing(sqlite3.connect(lab_settings.realtime_db)) as db, db:
        names = [r[0] for r in db.execute("SELECT name FROM musiconhold")]
    assert names == (["tenant-alpha"] if lab_settings.publish_mode == "realtime" else [])
    assert_hears(tones_heard(lab.record("hostile", 2, "tenant-alpha"), [A]), A)
    for bad in ("a]b", "a\nb", "../x", "tenant;drop"):
        assert "invalid tenant id" in cli(lab_settings, "sync", bad, code=1)


def test_asterisk_down_during_sync_then_converges(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    upload(lab_service, "alpha", A, tmp_path)
    lab.halt()
    try:
        if lab_settings.publish_mode == "static":
            out = cli(lab_settings, "sync", "--all", code=1)
            assert "reload is pending" in out and "tenant-alpha" in out
            assert "tenant-alpha" in lab_settings.classes_conf.read_text()
        else:
            out = json.loads(cli(lab_settings, "sync", "--all", "--json"))
            assert out["summary"]["added"] == 1  # realtime needs no Asterisk to publish
    finally:
        lab.boot()
    again = json.loads(cli(lab_settings, "sync", "--all", "--json"))
    assert again["summary"]["unchanged"] == 1
    assert again["reloaded"] is (lab_settings.publish_mode == "static")
    assert cli(lab_settings, "verify").strip() == "catalog, disk and Asterisk agree"
    assert_hears(tones_heard(lab.record("converged", 2, "tenant-alpha"), [A]), A)


def test_verify_reports_each_difference(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    upload(lab_service, "alpha", A, tmp_path)
    upload(lab_service, "beta", B, tmp_path)
    cli(lab_settings, "sync", "alpha")
    out = json.loads(cli(lab_settings, "verify", "--json", code=1))
    layers = {(d["moh_class"], d["layer"]) for d in out["differences"]}
    assert layers == {("tenant-beta", "disk"), ("tenant-beta", "publication"), ("tenant-beta", "asterisk")}
    for moh_file in (lab_settings.moh_dir / "tenant-alpha").glob("*/moh.sln"):
        moh_file.unlink()
    out = json.loads(cli(lab_settings, "verify", "--json", code=1))
    assert ("tenant-alpha", "disk") in {(d["moh_class"], d["layer"]) for d in out["differences"]}
    cli(lab_settings, "sync", "--all")
    assert json.loads(cli(lab_settings, "verify", "--json"))["ok"] is True


@pytest.mark.parametrize("point", ["file:3", "file:7", "published", "collect"])
def test_killed_sync_converges_on_rerun(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path, point: str
) -> None:
    upload(lab_service, "alpha", A, tmp_path)
    upload(lab_service, "beta", B, tmp_path)
    cli(lab_settings, "sync", "--all")
    upload(lab_service, "alpha", C, tmp_path)  # changed
    upload(lab_service, "gamma", B, tmp_path)  # added
    lab_service.delete("beta")  # removed

    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.sync_crash_driver", point],
        cwd=ROOT,
        env=settings_env(lab_settings),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    out = json.loads(cli(lab_settings, "sync", "--all", "--json"))
    syncer = build_syncer(lab_settings, lab_service)
    expected = {c: d for c, (d, _) in syncer.desired(None).items()}
    assert syncer.published() == expected
    assert set(expected) == {"tenant-alpha", "tenant-gamma"}
    assert not list(lab_settings.moh_dir.glob("*/.partial-*"))
    assert json.loads(cli(lab_settings, "verify", "--json"))["ok"] is True
    assert json.loads(cli(lab_settings, "sync", "--all", "--json"))["files_written"] == 0
    assert out["summary"]["removed"] + out["summary"]["changed"] + out["summary"]["added"] <= 3
    assert_hears(tones_heard(lab.record("killed_alpha", 2, "tenant-alpha"), [A, B, C]), C)
    assert_hears(tones_heard(lab.record("killed_beta", 2, "tenant-beta"), [A, B, C]), DEFAULT_TONE)
