"""`ooma-moh serve ari` on the lab Asterisk: real SIP holds, the caller's audio recorded.

Each call: a recorded caller and a tenant's SIP "phone" (loopback endpoint, its user leg carries
OOMA_MOH_TENANT) in an ARI bridge owned by the ooma-lab application; the phone "talks" (the
lab-talk tone) until it holds with a re-INVITE a=sendonly. Every 100 ms window of the caller's
recording is matched to a tone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ooma_moh.config import Settings
from ooma_moh.lab import DEFAULT_TONE, TALK_TONE, LabAsterisk
from ooma_moh.lab.ari import AriHarness, Call
from ooma_moh.service import MohService
from tests.audio import tone
from tests.integration.conftest import hold_figures, settings_env, tones_heard

A, B = 440.0, 660.0
pytestmark = pytest.mark.parametrize("mode", ["realtime"])
T = TypeVar("T")


class Handler:
    """`ooma-moh serve ari` as a child process."""

    def __init__(
        self,
        settings: Settings,
        lab: LabAsterisk,
        *,
        python: list[str] | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        """``python``: the interpreter's argv (another user's: setpriv …), ``env`` its environment,
        ``log`` where its stderr goes (default: this interpreter, the settings', the home)."""
        self.settings, self.lab = settings, lab
        self.proc: subprocess.Popen[bytes] | None = None
        self.python = python or [sys.executable]
        self.env = env or settings_env(settings)
        self.log = log or settings.home / "serve-ari.log"

    def start(self) -> None:
        before = self.connections()
        with open(self.log, "a") as log:  # the handler keeps its own descriptor
            self.proc = subprocess.Popen([*self.python, "-m", "ooma_moh", "serve", "ari"], env=self.env, stderr=log)
        try:
            deadline = time.monotonic() + 15
            while self.connections() == before:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, f"handler did not connect:\n{self.log.read_text()[-3000:]}"
                time.sleep(0.05)
            while "resynced" not in self.log.read_text().split("ARI events connected")[-1]:
                assert time.monotonic() < deadline, f"handler did not resync:\n{self.log.read_text()[-3000:]}"
                time.sleep(0.05)
        except BaseException:
            self.stop(signal.SIGKILL)  # a failed start must not leave a process behind
            raise

    def wait_for_line(self, text: str, after: int, timeout: float = 15.0) -> None:
        """Until the log holds more than ``after`` occurrences of ``text``."""
        deadline = time.monotonic() + timeout
        while self.log.read_text().count(text) <= after:
            assert time.monotonic() < deadline, f"no new {text!r} in the log:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.02)

    def connections(self) -> int:
        return self.log.read_text().count("ARI events connected") if self.log.exists() else 0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture
def handler(lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path) -> Iterator[Handler]:
    lab_service.upload("alpha", tone(tmp_path / "a.wav", A, seconds=4), accept_disclaimer=True, accepted_by="tester")
    lab_service.upload("beta", tone(tmp_path / "b.wav", B, seconds=4), accept_disclaimer=True, accepted_by="tester")
    lab_service.upload("gamma", tone(tmp_path / "g.wav", B, seconds=4), accept_disclaimer=True, accepted_by="tester")
    lab_service.delete("gamma")
    from ooma_moh.app import build_syncer

    build_syncer(lab_settings, lab_service).run(None)
    h = Handler(lab_settings, lab)
    h.start()
    yield h
    h.stop()
    assert "Traceback" not in h.log.read_text(), h.log.read_text()


def segments(windows: Sequence[T]) -> list[tuple[T, int, int]]:
    """Runs of equal windows: (value, first index, last index)."""
    runs: list[tuple[T, int, int]] = []
    for i, w in enumerate(windows):
        if runs and runs[-1][0] == w:
            runs[-1] = (w, runs[-1][1], i)
        else:
            runs.append((w, i, i))
    return runs


def heard(windows: list[float | None]) -> str:
    """What the caller heard, for a failure message: ``0.0-1.5 s talk, 1.5-4.0 s 440 Hz (alpha), …``."""
    names = {TALK_TONE: "talk", DEFAULT_TONE: "default", A: "440 Hz (alpha)", B: "660 Hz (beta)"}

    def name(value: float | None) -> str:  # silence is None: named before any number is formatted
        return "silence" if value is None else names.get(value, f"{value:.0f} Hz")

    return ", ".join(
        f"{first / 10:.1f}-{(last + 1) / 10:.1f} s {name(value)}" for value, first, last in segments(windows)
    )


def assert_holds(
    windows: list[float | None], periods: list[tuple[float, float]], expected: float, slack: float = 0.0
) -> None:
    """The caller hears talk, and during each (hold, unhold) period ``expected`` from the first
    100 ms to within 200 ms of unhold, never another class, never a silent gap. The first hold
    is placed on the wall clock; later ones relative to the previous unhold (a long recording
    drifts a few frames against the wall clock). ``slack``: how late Asterisk ran behind the
    requests in this call (:meth:`Call.lag`), added to each timing margin, so that a busy machine
    widens them by what was measured rather than by a guess."""
    what = (
        f"heard {heard(windows)}; holds asked at {[(round(h, 2), round(u, 2)) for h, u in periods]} s"
        f" (Asterisk up to {slack:.2f} s behind)"
    )
    music = [r for r in segments(windows) if r[0] not in (TALK_TONE, None)]
    assert [r[0] for r in music] == [expected] * len(periods), what
    previous_end = previous_unhold = None
    for (_, first, last), (hold_t, unhold_t) in zip(music, periods, strict=True):
        if previous_end is None:
            assert abs(first / 10 - hold_t) <= 0.4 + slack, what
        else:
            assert previous_unhold is not None  # set with previous_end
            assert abs((first - previous_end) / 10 - (hold_t - previous_unhold)) <= 0.3 + slack, what
        assert windows[first - 1] == TALK_TONE, what
        assert (last + 1 - first) / 10 - (unhold_t - hold_t) <= 0.3 + slack, what
        assert (last + 1 - first) / 10 >= (unhold_t - hold_t) - 0.3 - slack, what
        assert windows[last + 1] == TALK_TONE, what
        previous_end, previous_unhold = last + 1, unhold_t
    assert None not in windows[1:-1], what


def check_call(call: Call, periods: list[tuple[float, float]], expected: float) -> None:
    """:func:`assert_holds` on ``call``'s recording, with the lag it measured."""
    assert_holds(tones_heard(call.finish(), [A, B]), periods, expected, call.lag())


def hold_once_and_check(call: Call, expected: float) -> None:
    """Hold from 1.5 s to 4.0 s into the call; the caller must hear ``expected`` exactly then."""
    call.at(1.5)
    hold_t = call.hold()
    call.at(4.0)
    check_call(call, [(hold_t, call.unhold())], expected)


def test_without_the_handler_the_caller_hears_default(lab: LabAsterisk, ari_lab: AriHarness, handler: Handler) -> None:
    """The control: what this suite guards against really happens on this Asterisk."""
    handler.stop()
    call = Call(ari_lab, lab, "ari_no_handler", "alpha", 6)
    hold_once_and_check(call, DEFAULT_TONE)


def test_two_tenants_hold_at_once_without_cross_talk(lab: LabAsterisk, ari_lab: AriHarness, handler: Handler) -> None:
    alpha = Call(ari_lab, lab, "ari_alpha", "alpha", 8)
    beta = Call(ari_lab, lab, "ari_beta", "beta", 8)
    periods = {}
    for call in (alpha, beta):
        call.at(2.5)
        periods[call.name] = [(call.hold(), 0.0)]
    for call in (alpha, beta):
        call.at(5.5)
        periods[call.name] = [(periods[call.name][0][0], call.unhold())]
    check_call(alpha, periods["ari_alpha"], A)
    check_call(beta, periods["ari_beta"], B)


@pytest.mark.parametrize("tenant", ["gamma", "nobody", None])
def test_tenant_on_default_or_unknown_hears_default(
    lab: LabAsterisk, ari_lab: AriHarness, handler: Handler, tenant: str | None
) -> None:
    call = Call(ari_lab, lab, f"ari_default_{tenant}", tenant, 6)
    hold_once_and_check(call, DEFAULT_TONE)


@pytest.mark.every_backend  # the hold handler's class lookup on PostgreSQL + S3 too
def test_recorded_bridge_caller_hears_music_not_silence(
    lab: LabAsterisk, ari_lab: AriHarness, handler: Handler
) -> None:
    """The recording starts 1.5 s into the call, long after the handler read the settled bridge
    (as forwarding), and the hold comes 0.3 s later, before any new read: the handler, which no
    longer reads a known bridge on the hold's path, learns of the softmix switch from the
    ``RecordingStarted`` event (docs/asterisk-facts.md) and starts the music itself."""
    call = Call(ari_lab, lab, "ari_recorded", "alpha", 7)
    call.at(1.5)
    call.record_bridge()
    call.at(1.8)
    hold_t = call.hold()
    call.at(5.0)
    periods = [(hold_t, call.unhold())]
    check_call(call, periods, A)


def test_tenant_from_the_endpoint_map(
    lab: LabAsterisk, ari_lab: AriHarness, handler: Handler, lab_service: MohService
) -> None:
    """No OOMA_MOH_TENANT, no accountcode: the holder's endpoint is mapped to alpha."""
    lab_service.catalog.map_endpoint("PJSIP/lab-loop", "alpha")
    call = Call(ari_lab, lab, "ari_endpoint_map", None, 6)
    hold_once_and_check(call, A)


def test_users_of_two_tenants_holder_decides(lab: LabAsterisk, ari_lab: AriHarness, handler: Handler) -> None:
    """The caller is a user of beta; alpha's user holds: the caller hears alpha's music."""
    call = Call(ari_lab, lab, "ari_two_tenants", "alpha", 6, caller_tenant="beta")
    hold_once_and_check(call, A)


def test_channel_joining_during_hold_hears_the_music(lab: LabAsterisk, ari_lab: AriHarness, handler: Handler) -> None:
    call = Call(ari_lab, lab, "ari_joined", "alpha", 7)
    call.at(1.5)
    call.hold()
    call.at(2.5)
    late = call.add_listener("ari_late", 3)
    joined_wav = lab.wait_recording(late)
    call.unhold()
    call.finish()
    windows = tones_heard(joined_wav, [A, B])
    assert windows[1:-1] and set(windows[1:-1]) == {A}, segments(windows)


def test_conference_gets_no_music(lab: LabAsterisk, ari_lab: AriHarness, handler: Handler) -> None:
    """With two other real parties still talking, a hold plays nothing into the conference."""
    call = Call(ari_lab, lab, "ari_conference", "alpha", 6)
    call.add_talker()
    call.at(1.5)
    call.hold()
    call.at(4.0)
    call.unhold()
    windows = tones_heard(call.finish(), [A, B])
    # The caller hears the user and the third party, both on the lab's talk tone: the two drift a
    # little against each other, and where they cancel (a beat every few seconds) a window's peak
    # can land a bin or two off 1000 Hz (1020 Hz seen). Music would show there first, so: every
    # window talk or within 50 Hz of it (no music, no silence), and talk exactly in nearly all.
    heard = windows[1:-1]
    assert all(w is not None and abs(w - TALK_TONE) <= 50 for w in heard), segments(windows)
    assert heard.count(TALK_TONE) >= 0.9 * len(heard), segments(windows)


def test_hold_unhold_twenty_times(
    lab: LabAsterisk, ari_lab: AriHarness, lab_settings: Settings, handler: Handler
) -> None:
    """... and the hold statistics (issue 22) count exactly 20 holds of alpha, their time on hold
    within 0.5 s of what the phone did, the median in the right bucket."""
    call = Call(ari_lab, lab, "ari_twenty", "alpha", 25)
    periods = []
    for i in range(20):
        call.at(1.0 + i * 1.1)
        hold_t = call.hold()
        call.at(1.6 + i * 1.1)
        periods.append((hold_t, call.unhold()))
    check_call(call, periods, A)
    figures = hold_figures(lab_settings, "alpha", 20)
    assert (figures.holds, figures.hung_up, figures.fallback) == (20, 0, 0), figures
    assert abs(figures.seconds - sum(u - h for h, u in periods)) <= 0.5, (figures.seconds, periods)
    assert figures.buckets == {0: 20}  # each about 0.6 s: all in the first bucket, (0, 1] s


@pytest.mark.parametrize("recorded", [False, True])
def test_holder_hangs_up_during_hold(lab: LabAsterisk, ari_lab: AriHarness, handler: Handler, recorded: bool) -> None:
    call = Call(ari_lab, lab, f"ari_holder_gone_{int(recorded)}", "alpha", 6)
    if recorded:
        call.record_bridge()
    call.at(1.5)
    hold_t = call.hold()
    call.at(3.0)
    gone_t = call.hangup("user")
    windows = tones_heard(call.finish(), [A, B])
    slack, what = call.lag(), f"heard {heard(windows)}; hold at {hold_t:.2f} s, holder gone at {gone_t:.2f} s"
    music = [r for r in segments(windows) if r[0] == A]
    assert len(music) == 1 and abs(music[0][1] / 10 - hold_t) <= 0.4 + slack, what
    assert (music[0][2] + 1) / 10 - gone_t <= 0.3 + slack, what  # music stops with the holder


def test_caller_hangs_up_during_hold_then_next_hold_works(
    lab: LabAsterisk, ari_lab: AriHarness, lab_settings: Settings, handler: Handler
) -> None:
    """... and the hold statistics (issue 22) say so: 2 holds, 1 hung up, their time within
    0.5 s; SIGTERM writes what the last second counted; a restarted handler adds to them."""
    call = Call(ari_lab, lab, "ari_caller_gone", "alpha", 6)
    call.record_bridge()
    call.at(1.5)
    first_hold = call.hold()
    call.at(2.5)
    gone_t = call.hangup("caller")
    call.unhold()
    call.finish()
    nxt = Call(ari_lab, lab, "ari_after_gone", "alpha", 5)
    nxt.at(1.5)
    hold_t = nxt.hold()
    nxt.at(3.5)
    periods = [(hold_t, nxt.unhold())]
    check_call(nxt, periods, A)
    assert handler.proc is not None
    assert handler.proc.poll() is None
    handler.stop()  # SIGTERM right after the unhold: the last holds are written on the way out
    figures = hold_figures(lab_settings, "alpha", 2, timeout=0)
    assert (figures.holds, figures.hung_up, figures.fallback) == (2, 1, 0), figures
    held_for = (gone_t - first_hold) + (periods[0][1] - periods[0][0])
    assert abs(figures.seconds - held_for) <= 0.5, (figures.seconds, held_for)
    handler.start()  # a new process adds to the stored figures
    again = Call(ari_lab, lab, "ari_after_restart", "alpha", 3)
    again.at(1.0)
    again_hold = again.hold()
    again.at(2.0)
    held_for += again.unhold() - again_hold
    again.finish()
    figures = hold_figures(lab_settings, "alpha", 3)
    assert (figures.holds, figures.hung_up) == (3, 1) and abs(figures.seconds - held_for) <= 0.5, figures


def test_handler_restarted_during_hold_resyncs(lab: LabAsterisk, ari_lab: AriHarness, handler: Handler) -> None:
    """The handler is killed during a hold in a recorded bridge (where the music is the handler's
    to start and stop) and started again: the new process finds the hold and stops the music at
    the unhold, and starts it at the next hold. The schedule follows the restart as it went: the
    unhold is sent once the new process has resynced, however long that took on this machine."""
    call = Call(ari_lab, lab, "ari_restart", "alpha", 16)
    call.record_bridge()  # softmix: the handler itself must start and stop the music
    call.at(1.5)
    handled = handler.log.read_text().count("hold action=")
    first_hold = call.hold()
    handler.wait_for_line("hold action=", after=handled)  # the first process took the hold
    call.at(2.5)
    handler.stop(signal.SIGKILL)
    resynced = handler.log.read_text().count("hold action=resynced")
    handler.start()  # resyncs: finds the hold through OOMA_MOH_HOLD on the holder
    handler.wait_for_line("hold action=resynced", after=resynced, timeout=5)  # ... and says so
    back = call.at(0)  # the new process is ready
    assert back <= 10.0, f"the handler took {back - 2.5:.1f} s to restart and resync: the call is too short"
    call.at(max(4.0, back + 0.5))
    first_unhold = call.unhold()  # the new process must stop music it did not start
    call.at(first_unhold + 1.5)
    second_hold = call.hold()
    call.at(second_hold + 2.0)
    periods = [(first_hold, first_unhold), (second_hold, call.unhold())]
    check_call(call, periods, A)


def test_unhold_while_handler_is_down_is_caught_on_restart(
    lab: LabAsterisk, ari_lab: AriHarness, handler: Handler
) -> None:
    """The music stops when the restarted handler has resynced (its log says when: on a loaded
    machine a Python process can take seconds to start, which is not what is tested)."""
    call = Call(ari_lab, lab, "ari_missed_unhold", "alpha", 10)
    call.record_bridge()  # softmix: the music is the handler's to stop
    call.at(1.5)
    handled = handler.log.read_text().count("hold action=")
    hold_t = call.hold()
    handler.wait_for_line("hold action=", after=handled)  # the handler took the hold (its events can lag)
    call.at(2.5)
    handler.stop(signal.SIGKILL)
    call.at(3.0)
    unhold_t = call.unhold()
    resynced = handler.log.read_text().count("resynced:")
    handler.start()  # resync: OOMA_MOH_HOLD says "holding", CHANNEL(rtp,hold) says it is over
    handler.wait_for_line("resynced:", after=resynced, timeout=6)
    stopped_t = time.monotonic() - call.started
    assert stopped_t <= 9.0, f"the handler took {stopped_t - 3.0:.1f} s to restart and resync: the call is too short"
    windows = tones_heard(call.finish(), [A, B])
    slack = call.lag()
    what = f"heard {heard(windows)}; hold at {hold_t:.2f} s, unhold at {unhold_t:.2f} s, resynced at {stopped_t:.2f} s"
    music = [r for r in segments(windows) if r[0] == A]
    assert len(music) == 1 and abs(music[0][1] / 10 - hold_t) <= 0.4 + slack, what
    assert (music[0][2] + 1) / 10 <= stopped_t + 0.3 + slack, what
    assert windows[music[0][2] + 1] == TALK_TONE, what


def test_websocket_cut_during_hold_library_mode(
    lab: LabAsterisk, ari_lab: AriHarness, lab_settings: Settings, handler: Handler
) -> None:
    """The handler as a library object in our own event loop; its WebSocket is cut mid-hold."""
    import asyncio
    import threading

    from ooma_moh.app import open_catalog
    from ooma_moh.ari.client import AriClient
    from ooma_moh.ari.hold import HoldHandler
    from ooma_moh.ari.listener import EventListener
    from ooma_moh.resolve import ClassResolver

    handler.stop()  # this test runs its own
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    client = AriClient(lab_settings.ari_url, lab_settings.ari_user, lab_settings.ari_password)
    catalog = open_catalog(lab_settings, writable=False)
    hold_handler = HoldHandler(client, ClassResolver(catalog, "tenant-"))
    listener = EventListener(client, "ooma-moh-lib", hold_handler.handle, on_connect=hold_handler.resync)
    task = asyncio.run_coroutine_threadsafe(listener.run(), loop)
    run: Callable[[Coroutine[Any, Any, object]], object]
    run = lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(15)  # noqa: E731
    run(asyncio.wait_for(listener.connected.wait(), 10))

    call = Call(ari_lab, lab, "ari_ws_cut", "alpha", 10)
    call.record_bridge()
    call.at(1.5)
    first_hold = call.hold()
    call.at(2.5)
    run(listener.drop())
    deadline = time.monotonic() + 10
    while not (listener.connections == 2 and listener.connected.is_set()):
        assert time.monotonic() < deadline, "the listener did not reconnect"
        time.sleep(0.05)
    assert len(hold_handler.holds) == 1  # rebuilt by the resync
    call.at(4.0)
    first_unhold = call.unhold()
    call.at(5.5)
    second_hold = call.hold()
    call.at(7.5)
    periods = [(first_hold, first_unhold), (second_hold, call.unhold())]
    windows = tones_heard(call.finish(), [A, B])
    run(listener.stop())
    task.result(10)
    run(client.close())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    catalog.close()
    assert_holds(windows, periods, A, call.lag())
    assert hold_handler.stats.actions["started"] == 2 and hold_handler.stats.actions["resynced"] == 1
