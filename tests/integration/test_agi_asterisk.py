"""The FastAGI `moh` route on the lab Asterisk: a dialplan call, then a real SIP hold by the
called side. The called party "talks" (the lab-talk tone) until it holds; the caller's recording
must then be the tenant's tone from the first 100 ms of the hold until unhold, and the called
party's voice again right after."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.lab import DEFAULT_TONE, TALK_TONE, LabAsterisk, free_port
from ooma_moh.lab.ari import AriHarness
from ooma_moh.service import MohService
from tests.audio import tone
from tests.integration.conftest import reap, settings_env, tones_heard, wait_for_port

A, B = 440.0, 660.0
HOLD_AT, HOLD_FOR, SECONDS = 1.5, 3.0, 7


@pytest.fixture
def agi_server(lab: LabAsterisk, lab_settings: Settings) -> Iterator[subprocess.Popen[str]]:
    """`ooma-moh serve agi` on a free port, wired into the lab dialplan's OOMA_MOH_AGI."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ooma_moh", "serve", "agi", "--listen", f"127.0.0.1:{port}"],
        env=settings_env(lab_settings),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_port(port, proc)
    lab.cli(f"dialplan set global OOMA_MOH_AGI agi://127.0.0.1:{port}")
    yield proc
    reap(proc)


def held_call(
    lab: LabAsterisk, ari_lab: AriHarness, name: str, destination: str
) -> tuple[list[float | None], float, float]:
    """A recorded caller runs ``destination``; the called leg holds at HOLD_AT for HOLD_FOR s."""
    wav = lab.start_call_recording(name, SECONDS, destination)
    called = ari_lab.wait_event("StasisStart")["channel"]["id"]
    ari_lab.request("POST", f"/channels/{called}/moh", mohClass="lab-talk")
    started = time.monotonic()  # the recording's first frame: the called party starts talking
    time.sleep(HOLD_AT)
    hold_t = time.monotonic() - started
    ari_lab.hold(called)
    time.sleep(max(0.0, started + HOLD_AT + HOLD_FOR - time.monotonic()))
    unhold_t = time.monotonic() - started
    ari_lab.unhold(called)
    return tones_heard(lab.wait_recording(wav), [A, B]), hold_t, unhold_t


def assert_hold_music(windows: list[float | None], hold_t: float, unhold_t: float, expected: float) -> None:
    """Talk, then ``expected`` from the first 100 ms of the hold to unhold, then talk again."""
    music = [i for i, w in enumerate(windows) if w not in (TALK_TONE, None)]
    assert music, f"the caller heard no hold music: {windows}"
    first, last = music[0], music[-1]
    assert abs(first / 10 - hold_t) <= 0.4, (first, hold_t, windows)
    assert set(windows[:first]) <= {TALK_TONE, None} and windows[first - 1] == TALK_TONE, windows
    assert windows[first : last + 1] == [expected] * (last + 1 - first), windows  # from the first 100 ms
    assert (last - first + 1) / 10 >= HOLD_FOR - 0.4, windows
    assert (last + 1) / 10 - unhold_t <= 0.3, (last, unhold_t, windows)  # stops within 200 ms (+1 window)
    assert windows[last + 1 : last + 6] == [TALK_TONE] * 5, windows  # and the conversation is back


@pytest.mark.parametrize("mode", ["realtime"])
@pytest.mark.parametrize("how", [pytest.param("arg", marks=pytest.mark.every_backend), "query", "var", "acct"])
def test_tenant_from_each_source_hears_its_music(
    lab: LabAsterisk,
    ari_lab: AriHarness,
    agi_server: subprocess.Popen[str],
    lab_service: MohService,
    tmp_path: Path,
    how: str,
) -> None:
    lab_service.upload("alpha", tone(tmp_path / "a.wav", A, seconds=4), accept_disclaimer=True, accepted_by="tester")
    lab_service.upload("beta", tone(tmp_path / "b.wav", B, seconds=4), accept_disclaimer=True, accepted_by="tester")
    from click.testing import CliRunner

    from ooma_moh.cli import main

    assert CliRunner().invoke(main, ["sync", "--all"], env=settings_env(lab_service.settings)).exit_code == 0
    windows, hold_t, unhold_t = held_call(lab, ari_lab, f"agi_{how}", f"{how}-alpha@ooma-lab-agi-call")
    assert_hold_music(windows, hold_t, unhold_t, A)


@pytest.mark.parametrize("mode", ["realtime"])
@pytest.mark.parametrize(
    "destination", ["arg-nobody@ooma-lab-agi-call", "arg-gamma@ooma-lab-agi-call", "none@ooma-lab-agi-call"]
)
def test_unknown_or_default_tenant_hears_default(
    lab: LabAsterisk,
    ari_lab: AriHarness,
    agi_server: subprocess.Popen[str],
    lab_service: MohService,
    tmp_path: Path,
    destination: str,
) -> None:
    lab_service.upload("gamma", tone(tmp_path / "g.wav", B, seconds=4), accept_disclaimer=True, accepted_by="tester")
    lab_service.delete("gamma")
    name = "agi_" + destination.split("@")[0].replace("-", "_")
    windows, hold_t, unhold_t = held_call(lab, ari_lab, name, destination)
    assert_hold_music(windows, hold_t, unhold_t, DEFAULT_TONE)


@pytest.mark.parametrize("mode", ["realtime"])
def test_agi_server_down_call_still_connects_with_default(
    lab: LabAsterisk, ari_lab: AriHarness, lab_settings: Settings
) -> None:
    lab.cli(f"dialplan set global OOMA_MOH_AGI agi://127.0.0.1:{free_port()}")  # nothing listens
    windows, hold_t, unhold_t = held_call(lab, ari_lab, "agi_down", "arg-alpha@ooma-lab-agi-call")
    assert_hold_music(windows, hold_t, unhold_t, DEFAULT_TONE)
