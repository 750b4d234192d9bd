"""A recorded caller on the lab dialplan (:class:`DialplanCall`): the calls of docs/holds.md that
the dialplan bridges, not ARI — the FastAGI route's path, driven through :class:`~.ari.AriHarness`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .ari import AriHarness, refer_to
from .asterisk import LabAsterisk


class DialplanCall:
    """A recorded caller that runs the lab dialplan at ``destination`` (``exten@context``, see the
    ``ooma-lab-hold`` context): the calls of docs/holds.md, bridged by the dialplan, not by ARI.

    When the dialplan reaches the loopback "phone", its leg enters ``Stasis(ooma-lab,
    phone-<name>)``; :meth:`answer_phone` waits for it and makes it talk (the lab-talk tone), and
    :meth:`hold` makes it hold (a re-INVITE a=sendonly). ``started`` is the originate time, the
    recording's first frame within a few tens of milliseconds.
    """

    def __init__(self, harness: AriHarness, lab: LabAsterisk, name: str, seconds: int, destination: str) -> None:
        self.harness, self.lab, self.name = harness, lab, name
        self.started = time.monotonic()
        self.wav = lab.start_call_recording(name, seconds, destination)
        self.phone: str | None = None

    def answer_phone(self, timeout: float = 15.0, phone: str | None = None) -> float:
        """Wait until the call reaches the phone (``phone-<name>``, or ``phone-<phone>`` when
        given: a transfer target); the phone starts talking. Returns the offset."""
        args = [f"phone-{phone or self.name}"]
        event = self.harness.wait_event("StasisStart", lambda e: e["args"] == args, timeout)
        self.phone = event["channel"]["id"]
        self.harness.request("POST", f"/channels/{self.phone}/moh", mohClass="lab-talk")
        return time.monotonic() - self.started

    def phone_runs(self, context: str, extension: str) -> float:
        """The phone places a call whose far leg runs ``extension@context`` (e.g. ParkedCall);
        once answered, the phone talks. Returns the offset at which it talks."""
        self.harness.request(
            "POST",
            "/channels",
            endpoint="PJSIP/lab-loop",
            context=context,
            extension=extension,
            priority=1,
            body={"variables": {"PJSIP_HEADER(add,X-Lab-Call)": self.name}},
        )
        return self.answer_phone()

    def at(self, seconds: float) -> float:
        """Sleep until ``seconds`` after the call started; return the exact offset."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))
        return time.monotonic() - self.started

    def dtmf(self, digits: str) -> float:
        """The phone sends ``digits`` (RFC 4733, 100 ms each, 200 ms apart); returns the offset."""
        offset = time.monotonic() - self.started
        assert self.phone is not None, "the call has not reached the phone"
        self.harness.request("POST", f"/channels/{self.phone}/dtmf", dtmf=digits, duration=100, between=200)
        return offset

    def refer(self, user: str, replacing: str | None = None, phone: str | None = None) -> float:
        """The phone (or its earlier leg ``phone``) transfers the call by SIP REFER to ``user``
        (an extension of the Dial leg's TRANSFER_CONTEXT): blind, or with ``replacing`` (the
        phone's leg of a consultation call, :meth:`consult`) attended, REFER with Replaces
        naming the consultation's dialog. Returns the offset."""
        transferring = phone or self.phone
        assert transferring is not None, "the call has not reached the phone"
        replaces = None
        if replacing is not None:
            call_id, local_tag, remote_tag = self.harness.dialog(replacing)
            replaces = (call_id, remote_tag, local_tag)  # to-tag: the tag of the side that receives the REFER
        offset = time.monotonic() - self.started
        self.harness.refer(transferring, refer_to(self.lab, user, replaces))
        return offset

    def consult(self, target: str, context: str = "ooma-lab-xfer-consult") -> tuple[str, float]:
        """The phone places a second call (an attended transfer's consultation), which reaches
        the phone ``phone-<target>`` through ``to-<target>@context``; that phone answers and
        talks and becomes :attr:`phone`. Returns the first phone's leg of the consultation and
        the offset at which the target talks."""
        far = f"{self.name}_c"
        self.harness.request(
            "POST",
            "/channels",
            endpoint="PJSIP/lab-loop",
            app="ooma-lab",
            appArgs=f"consult-{self.name}",
            body={"variables": {"PJSIP_HEADER(add,X-Lab-Call)": far}},
        )
        far_leg = self.harness.wait_event("StasisStart", lambda e: e["args"] == [f"phone-{far}"])["channel"]["id"]
        self.harness.request(
            "POST", f"/channels/{far_leg}/continue", context=context, extension=f"to-{target}", priority=1
        )
        leg = self.harness.wait_event("StasisStart", lambda e: e["args"] == [f"consult-{self.name}"])["channel"]["id"]
        return leg, self.answer_phone(phone=target)

    def hangup_phone(self) -> float:
        """The phone hangs up; returns the offset."""
        offset = time.monotonic() - self.started
        assert self.phone is not None, "the call has not reached the phone"
        self.harness.request("DELETE", f"/channels/{self.phone}")
        return offset

    def hold(self) -> float:
        """The phone holds (re-INVITE a=sendonly); returns the offset."""
        offset = time.monotonic() - self.started
        assert self.phone is not None, "the call has not reached the phone"
        self.harness.hold(self.phone)
        return offset

    def unhold(self) -> float:
        """The phone takes the call off hold; returns the offset."""
        offset = time.monotonic() - self.started
        assert self.phone is not None, "the call has not reached the phone"
        self.harness.unhold(self.phone)
        return offset

    def finish(self) -> Path:
        """Wait for the recording; hang up the phone if it is still there."""
        wav = self.lab.wait_recording(self.wav)
        if self.phone is not None:
            with contextlib.suppress(Exception):  # already gone
                self.harness.request("DELETE", f"/channels/{self.phone}")
        return wav
