"""Faults of the server's own storage and processes (issue 8): a full or read-only disk at every
step of an upload, a lost or damaged catalog next to existing blobs, missing blobs, and an upload
killed half-way. Each leaves the tenant's previous music complete and playable.

Disks are real tmpfs mounts (the suite runs as root for the lab Asterisk anyway)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from ooma_moh.app import build_service
from ooma_moh.config import Settings, settings_environ
from ooma_moh.errors import StorageError
from ooma_moh.http.server import start_http
from ooma_moh.media import FfmpegConverter
from ooma_moh.media_rules import Conversion
from ooma_moh.service import MohService
from tests.audio import ffmpeg, tone
from tests.disk import fill, free_bytes, remount, tmpfs
from tests.integration.conftest import reap, spooled

ROOT = Path(__file__).resolve().parents[2]


def cli(settings: Settings, *args: str, code: int = 0, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``ooma-moh ARGS`` as an operator would, in a child process."""
    env = {**os.environ, **settings_environ(settings)}
    proc = subprocess.run(
        [sys.executable, "-m", "ooma_moh", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    if code:
        assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    return proc


def mono_mp3(path: Path, seconds: float, freq: float = 500, kbps: int = 32, rate: int = 44100) -> Path:
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=f={freq}:d={seconds}:sample_rate={rate}",
        "-ac",
        "1",
        "-c:a",
        "libmp3lame",
        "-b:a",
        f"{kbps}k",
        str(path),
    )
    return path


class Home:
    """A data home on its own small tmpfs, with tenant ``acme`` already on a good file."""

    def __init__(self, disk: Path, inputs: Path) -> None:
        self.disk = disk
        self.settings = Settings(home=disk / "home")
        self.service = build_service(self.settings)
        self.before = self.service.upload(
            "acme", mono_mp3(inputs / "good.mp3", 10, 300, 128), accept_disclaimer=True, accepted_by="alice"
        )
        self.stored = self.blobs()

    def blobs(self) -> set[str]:
        return {p.name for p in self.settings.blob_dir.glob("??/*")}

    def assert_music_intact(self) -> None:
        """The tenant's music is exactly as before, every file complete and checked."""
        service = build_service(self.settings, writable=False)
        try:
            assert service.show("acme") == self.before
            for rendition in self.before.renditions:
                assert service.blobs.read(rendition.sha256)  # present, sha256 checked
            assert self.stored <= self.blobs()
        finally:
            service.catalog.close()
        assert list(self.settings.blob_dir.joinpath("tmp").iterdir()) == []


@pytest.fixture
def home(root: None, tmp_path: Path) -> Iterator[Home]:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with tmpfs(tmp_path / "disk", 8 << 20) as disk:
        h = Home(disk, inputs)
        yield h
        h.service.catalog.close()


#: free space left before the upload of a 20 s mono 32 kbit/s MP3 (80 kB): enough for the steps
#: before the named one, not for it (decoded PCM 1.28 MB, renditions 1.44 MB).
STEPS = {"staging": 16 << 10, "decoding": 480 << 10, "renditions": 1900 << 10}


@pytest.mark.parametrize("step", list(STEPS))
def test_disk_full_at_each_step_keeps_the_music(home: Home, tmp_path: Path, step: str) -> None:
    upload = mono_mp3(tmp_path / "inputs" / "new.mp3", 20)
    fill(home.disk, leave=STEPS[step])
    with pytest.raises(StorageError) as info:
        home.service.upload("acme", upload, accept_disclaimer=True, accepted_by="alice")
    assert info.value.reason == "disk_full", str(info.value)
    assert "/" not in str(info.value) and "nothing was changed" in str(info.value)
    home.assert_music_intact()


def test_disk_full_at_the_catalog_commit_keeps_the_music(home: Home, tmp_path: Path) -> None:
    real = FfmpegConverter(home.settings)

    class FillsTheDisk:
        def convert(self, source: Path, workdir: Path) -> Conversion:
            conversion = real.convert(source, workdir)
            fill(home.disk, leave=0)  # renditions are stored by rename; the journal needs space
            return conversion

    service = MohService(home.settings, home.service.catalog, home.service.blobs, FillsTheDisk())
    with pytest.raises(StorageError) as info:
        service.upload(
            "acme", mono_mp3(tmp_path / "inputs" / "new.mp3", 5), accept_disclaimer=True, accepted_by="alice"
        )
    assert info.value.reason == "disk_full"
    home.assert_music_intact()


def test_the_reported_repro_3_mb_disk(root: None, tmp_path: Path) -> None:
    """Issue 8's repro: on a 3 MB disk, a good 10 s MP3, then a 20 s mono 32 kbit/s MP3: it used
    to exit 0 with 0-byte .alaw/.ulaw/.g722 and a cut .sln, the good music gone."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with tmpfs(tmp_path / "disk", 3 << 20) as disk:
        settings = Settings(home=disk / "home")
        cli(settings, "upload", "acme", str(mono_mp3(inputs / "good.mp3", 10, 300, 128)), "--accept-disclaimer")
        before = json.loads(cli(settings, "show", "acme", "--json").stdout)
        failed = cli(settings, "upload", "acme", str(mono_mp3(inputs / "m20.mp3", 20)), "--accept-disclaimer", code=1)
        assert "disk is full" in failed.stderr
        assert json.loads(cli(settings, "show", "acme", "--json").stdout) == before
        out = tmp_path / "check.wav"
        assert "9.75 s" in cli(settings, "listen", "acme", "-o", str(out)).stdout  # 10 s - the loop crossfade


def test_read_only_home_serves_every_read(home: Home, tmp_path: Path) -> None:
    settings = home.settings
    home.service.catalog.map_endpoint("PJSIP/acme-100", "acme")
    home.service.catalog.close()
    remount(home.disk, "ro")
    assert home.before.upload is not None
    try:
        assert json.loads(cli(settings, "show", "acme", "--json").stdout)["file"]["sha256"] == home.before.upload.sha256
        assert "acme" in cli(settings, "list").stdout
        assert "acme" in cli(settings, "endpoints").stdout
        cli(settings, "listen", "acme", "-o", str(tmp_path / "l.wav"))
        failed = cli(
            settings, "upload", "acme", str(tone(tmp_path / "inputs" / "x.wav", 440)), "--accept-disclaimer", code=1
        )
        assert "read-only" in failed.stderr and str(settings.home) not in failed.stderr
        assert_agi_answers(settings, "tenant-acme")
    finally:
        remount(home.disk, "rw")
    home.assert_music_intact()


#: a writer killed in the middle of a big transaction, after SQLite wrote the rollback journal and
#: spilled changed pages into the catalog file: a hot journal
KILLED_MID_COMMIT = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=8")
db.execute("BEGIN IMMEDIATE")
db.execute("DELETE FROM tenants")
db.execute("CREATE TABLE filler (x BLOB)")
for _ in range(400):
    db.execute("INSERT INTO filler VALUES (randomblob(4000))")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.embedded_only  # the SQLite file itself; PostgreSQL rolls back on the server
def test_writer_killed_mid_commit_is_rolled_back_by_the_next_process_that_may(home: Home, tmp_path: Path) -> None:
    """A hot journal used to make every read-only open fail ("the catalog is read-only") until
    someone opened the file by hand: `serve ari` / `serve agi` could not start, callers heard
    `default`. A process that may write rolls it back; one that may not says what happened."""
    settings = home.settings
    home.service.catalog.close()
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_COMMIT, str(settings.catalog_path)], check=False)
    journal = settings.catalog_path.with_name(settings.catalog_path.name + "-journal")
    assert killed.returncode == -signal.SIGKILL and journal.stat().st_size > 0
    remount(home.disk, "ro")  # as the sandboxed serve ari/agi see it: nobody here may roll it back
    try:
        failed = cli(settings, "show", "acme", code=1)
        assert "a writer crashed mid-commit" in failed.stderr and "ooma-moh sync" in failed.stderr, failed.stderr
    finally:
        remount(home.disk, "rw")
    assert home.before.upload is not None
    assert json.loads(cli(settings, "show", "acme", "--json").stdout)["file"]["sha256"] == home.before.upload.sha256
    assert not journal.exists()  # rolled back by that read-only command, which may write here
    assert_agi_answers(settings, "tenant-acme")
    home.assert_music_intact()


def test_full_home_serves_every_read(home: Home, tmp_path: Path) -> None:
    settings = home.settings
    home.service.catalog.close()
    token = cli(settings, "tokens", "create", "--operator").stdout.strip().splitlines()[-1]
    upload = tone(tmp_path / "inputs" / "x.wav", 440)

    async def over_http() -> None:
        """``serve http``, started before the disk filled up: an upload is 507 disk_full (was 500
        "internal error" when the spool write failed), and the tenant still reads as it was."""
        listening = await start_http(dataclasses.replace(settings, http_listen="127.0.0.1:0"))
        port = listening.port
        try:
            fill(home.disk, leave=0)
            assert free_bytes(home.disk) < 8192
            url = f"http://127.0.0.1:{port}/api/v1/tenants/acme/moh"
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
                form = aiohttp.FormData()
                form.add_field("disclaimer", "accepted")
                form.add_field("file", io.BytesIO(upload.read_bytes()), filename="x.wav")
                async with session.put(url, data=form) as r:
                    assert r.status == 507, await r.text()
                    assert (await r.json())["error"]["code"] == "disk_full"
                async with session.get(url) as r:
                    body = await r.json()
                    assert r.status == 200, body
                    assert body["file"]["sha256"] == home.before.upload.sha256  # type: ignore[union-attr]
        finally:
            await listening.stop()

    asyncio.run(over_http())
    assert spooled(settings.home) == []  # the partial spool file went too
    assert "acme" in cli(settings, "list").stdout
    cli(settings, "listen", "acme", "-o", str(tmp_path / "l.wav"))
    failed = cli(settings, "upload", "acme", str(upload), "--accept-disclaimer", code=1)
    assert "disk is full" in failed.stderr
    assert_agi_answers(settings, "tenant-acme")
    home.assert_music_intact()


def assert_agi_answers(settings: Settings, moh_class: str) -> None:
    """``serve agi`` starts on this home and gives tenant acme its class."""
    from ooma_moh.lab import free_port
    from tests.integration.conftest import settings_env, wait_for_port
    from tests.integration.test_agi_protocol import FakeAsterisk

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ooma_moh", "serve", "agi", "--listen", f"127.0.0.1:{port}"],
        env=settings_env(settings),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        assert FakeAsterisk(port).run(args=("acme",))["CHANNEL(musicclass)"] == moh_class
    finally:
        reap(proc)


# -- the catalog lost or damaged next to existing blobs ------------------------------------------


def _damage(path: Path, how: str) -> None:
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        side.unlink(missing_ok=True)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "missing":
        path.unlink()
    elif how == "another database":
        path.unlink()
        subprocess.run(["sqlite3", str(path), "CREATE TABLE t (x);"], check=False)
        if not path.exists():  # no sqlite3 shell: write one with Python
            import sqlite3

            sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()


@pytest.mark.embedded_only  # the SQLite file itself; PostgreSQL: test_catalog_backends.py
@pytest.mark.parametrize("how", ["empty", "missing", "another database"])
def test_lost_catalog_next_to_blobs_is_refused(
    service: MohService, settings: Settings, tmp_path: Path, how: str
) -> None:
    service.upload("acme", tone(tmp_path / "a.wav", 440), accept_disclaimer=True, accepted_by="alice")
    service.upload("other", tone(tmp_path / "o.wav", 660), accept_disclaimer=True, accepted_by="bob")
    service.catalog.close()
    backup = tmp_path / "catalog.backup"
    shutil.copy(settings.catalog_path, backup)
    blobs = sorted(p.name for p in settings.blob_dir.glob("??/*"))
    _damage(settings.catalog_path, how)

    for args in (
        ("show", "acme"),
        ("list",),
        ("upload", "third", str(tone(tmp_path / "t.wav", 880)), "--accept-disclaimer"),
        ("delete", "acme"),
        ("sync", "--all"),
    ):
        failed = cli(settings, *args, code=1)
        assert "missing or empty" in failed.stderr and "--start-over" in failed.stderr, args
    assert sorted(p.name for p in settings.blob_dir.glob("??/*")) == blobs

    # restoring the backup is all it takes
    shutil.copy(backup, settings.catalog_path)
    restored = build_service(settings)
    assert restored.rendition_bytes("acme", "sln16")
    restored.catalog.close()


@pytest.mark.embedded_only  # the SQLite file itself; PostgreSQL: test_catalog_backends.py
def test_start_over_keeps_old_blobs_in_the_trash(service: MohService, settings: Settings, tmp_path: Path) -> None:
    before = service.upload("acme", tone(tmp_path / "a.wav", 440), accept_disclaimer=True, accepted_by="alice")
    service.catalog.close()
    backup = tmp_path / "catalog.backup"
    shutil.copy(settings.catalog_path, backup)
    settings.catalog_path.write_bytes(b"")
    cli(settings, "init", "--start-over")
    cli(settings, "upload", "other", str(tone(tmp_path / "o.wav", 660)), "--accept-disclaimer")
    trashed = {p.name for p in (settings.blob_dir / "trash").iterdir()}
    assert {r.sha256 for r in before.renditions} <= trashed  # moved aside, not deleted
    # the operator then finds the backup: acme's music comes back from the trash
    shutil.copy(backup, settings.catalog_path)
    assert "2.75 s" in cli(settings, "listen", "acme", "-o", str(tmp_path / "l.wav")).stdout  # 3 s - the crossfade


@pytest.mark.embedded_only  # the SQLite file itself; PostgreSQL: test_catalog_backends.py
def test_garbage_catalog_is_reported_and_nothing_is_touched(
    service: MohService, settings: Settings, tmp_path: Path
) -> None:
    service.upload("acme", tone(tmp_path / "a.wav", 440), accept_disclaimer=True, accepted_by="alice")
    service.catalog.close()
    blobs = sorted(p.name for p in settings.blob_dir.glob("??/*"))
    settings.catalog_path.write_bytes(b"this is not a database at all, but it is not empty either" * 100)
    for args in (
        ("show", "acme"),
        ("upload", "x", str(tone(tmp_path / "t.wav", 880)), "--accept-disclaimer"),
        ("init", "--start-over"),
    ):
        failed = cli(settings, *args, code=1)
        assert "not a database" in failed.stderr, failed.stderr
    assert sorted(p.name for p in settings.blob_dir.glob("??/*")) == blobs


def test_read_commands_never_create_a_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "typo-home")
    for args in (("show", "acme"), ("list",), ("listen", "acme", "-o", str(tmp_path / "x.wav")), ("endpoints",)):
        failed = cli(settings, *args, code=1)
        assert "no catalog" in failed.stderr and "OOMA_MOH_HOME" in failed.stderr
    assert not settings.home.exists()


# -- stored files missing -------------------------------------------------------------------------


def test_missing_blob_is_one_clear_error(service: MohService, settings: Settings, tmp_path: Path) -> None:
    tenant = service.upload("acme", tone(tmp_path / "a.wav", 440), accept_disclaimer=True, accepted_by="alice")
    service.catalog.close()
    for rendition in tenant.renditions:
        lose_blob(settings, rendition.sha256)
    for args in (("listen", "acme", "-o", str(tmp_path / "l.wav")), ("sync", "acme")):
        failed = cli(settings, *args, code=1)
        where = "object storage" if settings.blob_url else "blob store"
        assert f"missing from the {where}" in failed.stderr and "backup" in failed.stderr, failed.stderr


def lose_blob(settings: Settings, sha: str) -> None:
    """Remove a blob from where it is stored: the home, or the bucket and this host's cache."""
    (settings.blob_dir / sha[:2] / sha).unlink(missing_ok=bool(settings.blob_url))
    if settings.blob_url:
        from ooma_moh.app import open_blobs
        from ooma_moh.storage.s3 import S3BlobStore

        store = open_blobs(settings)
        assert isinstance(store, S3BlobStore)  # blob_url is set
        store.client.delete_object(Bucket=store.bucket, Key=store.key(sha))


# -- an upload killed half-way -------------------------------------------------------------------


def _ffmpeg_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and "ffmpeg" in stat.split("(", 1)[1].split(")")[0]:
                found.append(int(entry.name))
    return found


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_upload_leaves_no_ffmpeg_and_no_scratch(
    service: MohService, settings: Settings, tmp_path: Path, sig: int
) -> None:
    before = service.upload("acme", tone(tmp_path / "a.wav", 440), accept_disclaimer=True, accepted_by="alice")
    service.catalog.close()
    long = mono_mp3(tmp_path / "long.mp3", 1700, kbps=8, rate=8000)  # 28 min: seconds of decoding
    env = {**os.environ, **settings_environ(settings)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ooma_moh", "upload", "acme", str(long), "--accept-disclaimer"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    children: list[int] = []
    # extend()'s None is the point of the `or`: the lambda gathers, then answers whether any was found
    _wait_until(lambda: bool(children.extend(_ffmpeg_children(proc.pid)) or children), 30, "ffmpeg to start")  # type: ignore[func-returns-value]
    os.kill(proc.pid, sig)
    # it unwinds (scratch removed, ffmpeg killed) before it exits: reap() now would send a second
    # SIGTERM, which during the interpreter's shutdown (its handlers reset) kills it with -15
    proc.wait(30)
    reap(proc)
    assert proc.returncode == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    _wait_until(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 10, "ffmpeg to die")
    scratch = settings.blob_dir / "tmp"
    if sig == signal.SIGTERM:
        assert list(scratch.iterdir()) == []  # cleaned on the way out
    else:
        assert list(scratch.iterdir())  # nothing could clean up after kill -9 ...
        cli(settings, "init")  # ... until the next command that writes
        assert list(scratch.iterdir()) == []
    after = build_service(settings, writable=False)
    assert after.show("acme") == before
    after.catalog.close()
