"""Fixtures for tests against the real lab Asterisk, started once per session.

If the lab cannot be provisioned or booted, every test that needs it fails with the reason:
nothing is skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest

from ooma_moh.app import build_service, open_catalog
from ooma_moh.config import Settings
from ooma_moh.holdstats import HoldDay
from ooma_moh.lab import DEFAULT_TONE, TALK_TONE, LabAsterisk, provision
from ooma_moh.publish import RealtimePublisher, write_atomically
from ooma_moh.service import MohService
from tests.audio import dominant_per_window
from tests.conftest import on_backend

if TYPE_CHECKING:  # imported by the fixture itself, only when a test uses it
    from ooma_moh.lab.ari import AriHarness

#: What became of each lab Asterisk, said at the end of a run that failed (pytest_terminal_summary).
LAB_REPORTS: list[str] = []


@contextlib.contextmanager
def running_lab(directory: Path | LabAsterisk) -> Iterator[LabAsterisk]:
    """A lab Asterisk booted in ``directory`` (or this one, not started yet). Its logs stay there
    (pytest keeps the last three runs'); a failed run ends by saying where they are and how
    Asterisk ended."""
    instance = directory if isinstance(directory, LabAsterisk) else LabAsterisk(directory)
    try:
        instance.start()
    except Exception:
        LAB_REPORTS.append(instance.post_mortem())
        instance.stop()
        raise
    try:
        yield instance
    finally:
        LAB_REPORTS.append(instance.post_mortem())  # before stop(): whether it was still running
        instance.stop()


@pytest.fixture(scope="session")
def lab_root(root: None) -> Path:
    """The lab's chroot, provisioned once and cached (ooma_moh/lab/provision.py). Every test that
    boots a lab Asterisk uses it, directly or through :func:`lab`: that makes it a ``lab`` test."""
    return provision()


@pytest.fixture(scope="session")
def lab(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabAsterisk]:
    """The running lab Asterisk, shared by the whole run (by each worker's tests under xdist)."""
    with running_lab(tmp_path_factory.mktemp("lab")) as instance:
        yield instance


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """After a failed run, where the lab Asterisk's logs (and any core file) are."""
    if exitstatus != 0 and LAB_REPORTS:
        terminalreporter.section("lab Asterisk")
        for report in LAB_REPORTS:
            terminalreporter.write_line(report)


def reset_lab(lab: LabAsterisk) -> None:
    """Empty the lab's ooma-moh home and make Asterisk forget every tenant class."""
    if not lab.running:
        lab.boot()
    realtime = lab.home / "realtime.sqlite3"
    if realtime.exists():  # never replace this file: Asterisk keeps it open
        publisher = RealtimePublisher(realtime, "")
        publisher.apply({}, set(publisher.current()))
    write_atomically(lab.home / "ooma-moh-classes.conf", "")
    lab.cli("moh reload")
    for entry in lab.home.iterdir():
        if entry.name not in (
            "realtime.sqlite3",
            "realtime.sqlite3-wal",
            "realtime.sqlite3-shm",
            "ooma-moh-classes.conf",
        ):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@pytest.fixture(params=["realtime", "static"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both publication modes."""
    return cast(str, request.param)  # one of params


@pytest.fixture
def lab_settings(request: pytest.FixtureRequest, lab: LabAsterisk, mode: str) -> Settings:
    """Settings pointing at the lab, in ``mode``, with a fresh home; old versions deleted at the
    next sync (retain_old_s=0) so clean-up is observable."""
    reset_lab(lab)
    settings = on_backend(request, **lab.settings_overrides(), publish_mode=mode, retain_old_s=0)
    open_catalog(settings).close()  # `ooma-moh init`: the servers only read, and refuse a home without one
    return settings


@pytest.fixture
def lab_service(lab_settings: Settings) -> Iterator[MohService]:
    """The service on the lab's home."""
    service = build_service(lab_settings)
    yield service
    service.catalog.close()


def tones_heard(wav_path: Path, candidates: list[float]) -> list[float | None]:
    """Per 100 ms of a recording: which of ``candidates`` (or the lab's DEFAULT_TONE, TALK_TONE)
    it is, None if silent, the measured frequency if it is none of them."""
    with wave.open(str(wav_path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768.0
    known = [*candidates, DEFAULT_TONE, TALK_TONE]
    result: list[float | None] = []
    for freq in dominant_per_window(samples, rate):
        if freq == 0.0:
            result.append(None)
            continue
        nearest = min(known, key=lambda k: abs(k - freq))
        result.append(nearest if abs(nearest - freq) <= 15 else freq)
    return result


def longest_silence(windows: list[float | None]) -> int:
    """The longest run of silent windows, ignoring the first window (call setup)."""
    best = run = 0
    for w in windows[1:]:
        run = run + 1 if w is None else 0
        best = max(best, run)
    return best


@pytest.fixture(scope="session")
def ari_lab(lab: LabAsterisk) -> Iterator[AriHarness]:
    """The ``ooma-lab`` Stasis application on the lab (see ooma_moh/lab/ari.py)."""
    from ooma_moh.lab.ari import AriHarness

    harness = AriHarness(lab).start()
    yield harness
    harness.stop()


def spooled(home: Path) -> list[Path]:
    """Upload files left in the servers' spool directories of ``home`` (a running server's lock
    file aside): none may stay once a request is answered."""
    incoming = home / "incoming"
    return [p for p in incoming.rglob("*") if p.is_file() and p.name != ".lock"] if incoming.exists() else []


def reap(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """Wait for ``proc`` to end (SIGTERM first if it still runs) and close its pipes: a pipe left
    to the garbage collector is a ResourceWarning, and warnings fail this suite. Its exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def hold_figures(settings: Settings, tenant: str, holds: int, timeout: float = 10.0) -> HoldDay:
    """The tenant's hold statistics of today and yesterday (UTC: a run across midnight) added up,
    once the catalog holds at least ``holds`` holds (written by `serve ari` once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        catalog = open_catalog(settings, writable=False)
        try:
            last = datetime.now(UTC).date()
            total = HoldDay(last)
            for day in catalog.hold_days(tenant, last - timedelta(days=1), last):
                total.add(day)
        finally:
            catalog.close()
        if total.holds >= holds or time.monotonic() > deadline:
            return total
        time.sleep(0.1)


def settings_env(settings: Settings) -> dict[str, str]:
    """``OOMA_MOH_*`` variables that reproduce ``settings`` in a child process."""
    import os

    from ooma_moh.config import settings_environ

    return {**os.environ, **settings_environ(settings)}


@pytest.fixture
def home(backend_settings: Settings, tmp_path: Path) -> tuple[Settings, str, bytes]:
    """A home with a catalog (SQLite, then PostgreSQL), an operator token, and a good 3 s MP3
    (the HTTP API's tests: test_http_api.py, test_http_drafts.py)."""
    from tests.audio import tone
    from tests.integration.test_http_api import GOOD, cli, new_token

    settings = backend_settings
    cli(settings, "init")
    return settings, new_token(settings, "--operator"), tone(tmp_path / "good.mp3", GOOD, 3, "mp3").read_bytes()
