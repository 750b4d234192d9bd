"""Test calls, "call my phone" (docs/http.md, "Test call"): the rules, with no I/O. ``serve http``
dials one of a tenant's endpoints over ARI (:mod:`ooma_moh.ari.testcall` does the I/O); once the
phone answers, it hears the tenant's class exactly as a held caller does, for
``test_call_seconds``, then the call ends.

Rules, in order, when a test call is asked for (:meth:`CallBook.admit`):

1. the endpoint must be one of the tenant's in the endpoint map (checked by the HTTP handler:
   404 otherwise, the same for an unknown endpoint and another tenant's);
2. one test call at a time per tenant: while one rings or plays, another is refused, with the
   seconds until it will have ended at the latest;
3. at most :data:`PER_HOUR` calls per tenant in any :data:`WINDOW_S` seconds: the next is refused
   until the oldest of them leaves the window. A call counts once it is placed (rung, busy or
   unreachable alike); one that ARI never took (:meth:`CallBook.withdraw`) does not;
4. at most :data:`AT_ONCE` calls ringing or playing in the server, whatever their tenants: rules 2
   and 3 bound one tenant, not a thousand tenants (or an operator token) asking at once — each a
   real call Asterisk dials and plays. The next is refused, not counted, with the seconds until
   the first of them will have ended at the latest.

A call's life: ``ringing`` (placed, until the phone answers) → ``playing`` (answered, the music
started) → ``ended`` (hung up, by us after ``test_call_seconds`` or by the phone). A call never
answered is ``failed``, and its ``reason`` is the hang-up cause Asterisk reports
(:func:`reason_of_cause`): ``busy``, ``no answer``, ``unreachable``; or ``ARI down`` when ARI was
lost while following it. The counters live in the server's memory: each ``serve http`` process
counts its own calls.
"""

from __future__ import annotations

import enum
import math
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: at most this many test calls per tenant in any WINDOW_S seconds
PER_HOUR = 5
#: at most this many test calls ringing or playing at once in one server, all tenants together
AT_ONCE = 20
WINDOW_S = 3600.0
#: how long a test call rings before Asterisk gives up on it (``no answer``)
RING_S = 30
#: how late an event may be before the call is settled without it
GRACE_S = 5.0
#: how long a finished call's state is kept for ``GET …/test-call/{id}``
KEEP_S = WINDOW_S
#: what the phone shows as the caller
CALLER_ID = "Music on hold test"


class CallState(enum.StrEnum):
    """Where a test call is."""

    RINGING = "ringing"
    PLAYING = "playing"
    ENDED = "ended"
    FAILED = "failed"


class FailReason(enum.StrEnum):
    """Why a test call failed."""

    BUSY = "busy"
    NO_ANSWER = "no answer"
    UNREACHABLE = "unreachable"
    ARI_DOWN = "ARI down"


#: Q.850 causes Asterisk reports (``ChannelDestroyed``'s ``cause``) for a call never answered
CAUSE_BUSY = 17
CAUSES_NO_ANSWER = frozenset({18, 19})  # no user responding, no answer (the ring timeout)


def reason_of_cause(cause: int) -> FailReason:
    """Why a call that was never answered ended, from its hang-up cause: 17 busy, 18 or 19 no
    answer, anything else (no route, unallocated number, congestion, ...) unreachable."""
    if cause == CAUSE_BUSY:
        return FailReason.BUSY
    if cause in CAUSES_NO_ANSWER:
        return FailReason.NO_ANSWER
    return FailReason.UNREACHABLE


def dial_string(template: str, endpoint: str) -> str:
    """The dial string of ``endpoint`` (``PJSIP/acme-100``) by ``test_call_dial``: ``{endpoint}``
    the whole name, ``{tech}`` and ``{resource}`` its two halves (the settings checked the
    template's fields)."""
    tech, _, resource = endpoint.partition("/")
    return string.Formatter().vformat(template, (), {"endpoint": endpoint, "tech": tech, "resource": resource})


def stasis_app(ari_app: str, instance: str) -> str:
    """The Stasis application a server's test calls enter once answered: not the hold handler's
    own, and one per server process (``instance``): a second connection for an application takes
    its events away from the first, so two servers on one Asterisk must not share one."""
    return f"{ari_app}-test-call-{instance}"


class CallRefused(Exception):
    """A test call the rules refuse (429): ``code`` says which rule, ``retry_after`` in whole seconds."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.code, self.retry_after = code, retry_after


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


@dataclass
class Call:
    """One test call. Times ``*_at`` are the book's clock (monotonic seconds), ``*_on`` wall time."""

    id: str
    tenant: str
    endpoint: str
    dial: str
    by: str
    placed_at: float
    placed_on: datetime
    state: CallState = CallState.RINGING
    reason: FailReason | None = None
    moh_class: str | None = None
    #: ARI took the origination: events about its channel may come
    originated: bool = False
    answered_at: float | None = None
    answered_on: datetime | None = None
    ended_at: float | None = None
    ended_on: datetime | None = None
    #: the hang-up cause Asterisk reported, if it did
    cause: int | None = field(default=None)

    @property
    def channel_id(self) -> str:
        """The id the call's channel is given in Asterisk."""
        return f"ooma-moh-test-{self.id}"

    @property
    def over(self) -> bool:
        """Ended or failed."""
        return self.state in (CallState.ENDED, CallState.FAILED)

    def body(self, seconds: float) -> dict[str, Any]:
        """What ``GET …/test-call/{id}`` answers."""
        return {
            "call": self.id,
            "state": self.state.value,
            "reason": self.reason.value if self.reason is not None else None,
            "endpoint": self.endpoint,
            "class": self.moh_class,
            "seconds": seconds,
            "placed_at": _iso(self.placed_on),
            "answered_at": _iso(self.answered_on),
            "ended_at": _iso(self.ended_on),
        }


def _wall() -> datetime:
    return datetime.now(UTC)


class CallBook:
    """The test calls of one server: which may be placed (the module's rules), and each call's
    state as events arrive. ``seconds`` is how long an answered call plays."""

    def __init__(
        self,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _wall,
    ) -> None:
        self.seconds = seconds
        self.clock, self.wall = clock, wall
        self._calls: dict[str, Call] = {}
        self._by_channel: dict[str, Call] = {}

    # -- placing --------------------------------------------------------------------------------
    def admit(self, tenant: str, endpoint: str, dial: str, by: str) -> Call:
        """A new call for ``tenant``, counted at once (rules 2 to 4); :class:`CallRefused` if a
        rule refuses it."""
        now = self.clock()
        self._forget(now)
        mine = [c for c in self._calls.values() if c.tenant == tenant]
        active = [c for c in mine if not c.over]
        if active:
            raise CallRefused(
                "test_call_in_progress",
                "a test call for this account is in progress: wait until it has ended",
                self._whole(max(self._latest_end(c) for c in active) - now),
            )
        recent = sorted(c.placed_at for c in mine if now - c.placed_at < WINDOW_S)
        if len(recent) >= PER_HOUR:
            raise CallRefused(
                "too_many_test_calls",
                f"at most {PER_HOUR} test calls an hour: try again later",
                self._whole(recent[-PER_HOUR] + WINDOW_S - now),
            )
        if len(everyone := self.active()) >= AT_ONCE:
            raise CallRefused(
                "test_calls_busy",
                f"{AT_ONCE} test calls are in progress on this server: try again shortly",
                self._whole(min(self._latest_end(c) for c in everyone) - now),
            )
        call = Call(secrets.token_hex(8), tenant, endpoint, dial, by, now, self.wall())
        self._calls[call.id] = call
        self._by_channel[call.channel_id] = call
        return call

    def withdraw(self, call: Call) -> None:
        """ARI did not take the call: it never existed (not counted)."""
        self._calls.pop(call.id, None)
        self._by_channel.pop(call.channel_id, None)

    def originated(self, call: Call) -> None:
        """ARI took the call: its channel exists, events may come."""
        call.originated = True

    # -- following -----------------------------------------------------------------------------
    def find(self, tenant: str, call_id: str) -> Call | None:
        """``tenant``'s call ``call_id`` (None for another tenant's, an unknown or a forgotten one)."""
        self._forget(self.clock())
        call = self._calls.get(call_id)
        return call if call is not None and call.tenant == tenant else None

    def by_channel(self, channel_id: object) -> Call | None:
        """The call whose channel is ``channel_id``, if any."""
        return self._by_channel.get(channel_id) if isinstance(channel_id, str) else None

    def active(self) -> list[Call]:
        """Calls ringing or playing."""
        return [c for c in self._calls.values() if not c.over]

    def answered(self, call: Call) -> bool:
        """The phone answered (its channel entered the Stasis application); False if the call
        was over or answered already."""
        if call.over or call.answered_at is not None:
            return False
        call.answered_at, call.answered_on = self.clock(), self.wall()
        return True

    def playing(self, call: Call, moh_class: str) -> None:
        """The music started on the answered call."""
        call.moh_class = moh_class
        if not call.over:
            call.state = CallState.PLAYING

    def destroyed(self, call: Call, cause: int) -> None:
        """Asterisk reports the call's channel gone, with its hang-up cause: ``ended`` once
        answered, else ``failed`` with the cause's reason."""
        call.cause = cause
        if call.answered_at is not None:
            self._settle(call, CallState.ENDED, None)
        else:
            self._settle(call, CallState.FAILED, reason_of_cause(cause))

    def lost(self, call: Call, reason: FailReason) -> None:
        """The call is given up without Asterisk's word (ARI down, an origination refused, no
        event in time): ``failed`` with ``reason``."""
        self._settle(call, CallState.FAILED, reason)

    def ended(self, call: Call) -> None:
        """The call is over as far as we can know (its channel is gone, its end not reported)."""
        if call.answered_at is not None:
            self._settle(call, CallState.ENDED, None)
        else:
            self._settle(call, CallState.FAILED, FailReason.ARI_DOWN)

    def apply(self, event: dict[str, Any]) -> Call | None:
        """An event of the test calls' Stasis application: the call it changed, if any.
        ``StasisStart`` is the answer; ``ChannelDestroyed`` the end, with its ``cause``; the rest
        (``ChannelStateChange`` to ``Ringing``/``Up``, ``StasisEnd``, a Local channel's other half)
        changes nothing."""
        channel = event.get("channel")
        call = self.by_channel(channel.get("id") if isinstance(channel, dict) else None)
        if call is None:
            return None
        kind = event.get("type")
        if kind == "StasisStart":
            return call if self.answered(call) else None
        if kind == "ChannelDestroyed" and not call.over:
            cause = event.get("cause")
            self.destroyed(call, cause if isinstance(cause, int) else 0)
            return call
        return None

    # -- inside ---------------------------------------------------------------------------------
    def _settle(self, call: Call, state: CallState, reason: FailReason | None) -> None:
        if call.over:
            return
        call.state, call.reason = state, reason
        call.ended_at, call.ended_on = self.clock(), self.wall()

    def _latest_end(self, call: Call) -> float:
        """When an active call will have ended at the latest (the ring timeout, then the music)."""
        start = call.answered_at if call.answered_at is not None else call.placed_at + RING_S
        return start + self.seconds + GRACE_S

    @staticmethod
    def _whole(seconds: float) -> int:
        return max(1, math.ceil(seconds))

    def _forget(self, now: float) -> None:
        """Drop calls over for more than KEEP_S (none of them counts any more: KEEP_S >= WINDOW_S)."""
        for call in [c for c in self._calls.values() if c.ended_at is not None and now - c.ended_at > KEEP_S]:
            self.withdraw(call)
