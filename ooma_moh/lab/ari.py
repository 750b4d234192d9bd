"""The lab's own ARI application (``ooma-lab``), driven from synchronous code (tests, benchmarks).

It plays the provider's application: owns callers and SIP "phones", bridges them, and holds a
phone, which makes chan_pjsip send a real re-INVITE a=sendonly over the lab's loopback endpoint.
It runs ooma-moh's own ARI client and events listener on an event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..ari.client import AriClient
from ..ari.listener import EventListener
from .asterisk import LabAsterisk


class AriHarness:
    """The ``ooma-lab`` Stasis application."""

    def __init__(self, lab: LabAsterisk, app: str = "ooma-lab") -> None:
        self.loop = asyncio.new_event_loop()
        self.client = AriClient(lab.ari_url, lab.ari_user, lab.ari_password)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.listener = EventListener(self.client, app, self._on_event, event_sources=())
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._task: concurrent.futures.Future[None] | None = None
        self._backlog: list[dict[str, Any]] = []

    async def _on_event(self, event: dict[str, Any]) -> None:
        event["received_at"] = time.monotonic()  # when this application saw it (see Call.lag)
        self.events.put(event)

    def start(self) -> AriHarness:
        """Start the loop thread and the events listener; return once the WebSocket is up."""
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self.listener.run(), self.loop)
        self.call(asyncio.wait_for(self.listener.connected.wait(), 10))
        return self

    def call(self, coro: Any, timeout: float = 15.0) -> Any:
        """Run a coroutine on the harness loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_event(
        self, kind: str, match: Callable[[dict[str, Any]], bool] = lambda _e: True, timeout: float = 15.0
    ) -> dict[str, Any]:
        """The first event of type ``kind`` satisfying ``match``; other events stay available."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._backlog):
                if event.get("type") == kind and match(event):
                    return self._backlog.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} event within {timeout} s")
            try:
                self._backlog.append(self.events.get(timeout=remaining))
            except queue.Empty:
                continue
            del self._backlog[:-2000]

    def seen(self, kind: str, channel_id: str) -> list[dict[str, Any]]:
        """The events of type ``kind`` about ``channel_id`` received so far, oldest first; they stay
        available to :meth:`wait_event`."""
        while True:
            try:
                self._backlog.append(self.events.get_nowait())
            except queue.Empty:
                break
        return [e for e in self._backlog if e.get("type") == kind and e.get("channel", {}).get("id") == channel_id]

    def request(self, method: str, path: str, **params: Any) -> Any:
        """One ARI request from synchronous code; its decoded answer."""
        return self.call(self.client.request(method, path, **params))

    def hold(self, channel_id: str) -> None:
        """Hold ``channel_id`` (on a PJSIP channel: a re-INVITE a=sendonly)."""
        self.request("POST", f"/channels/{channel_id}/hold")

    def unhold(self, channel_id: str) -> None:
        """Take ``channel_id`` off hold."""
        self.request("DELETE", f"/channels/{channel_id}/hold")

    def dialog(self, channel_id: str) -> tuple[str, str, str]:
        """A PJSIP channel's SIP dialog: (Call-ID, local tag, remote tag)."""
        call_id, local_tag, remote_tag = (
            self.call(self.client.get_variable(channel_id, f"CHANNEL(pjsip,{what})")) or ""
            for what in ("call-id", "local_tag", "remote_tag")
        )
        return call_id, local_tag, remote_tag

    def refer(self, channel_id: str, target: str) -> None:
        """The SIP UA behind PJSIP channel ``channel_id`` transfers its call: Asterisk asks the
        channel to transfer (chan_pjsip's transfer callback), which sends a REFER with
        ``Refer-To: target`` to the dialog's other side (docs/holds.md)."""
        self.request("POST", f"/channels/{channel_id}/redirect", endpoint=f"PJSIP/{target}")

    def stop(self) -> None:
        """Stop the listener, close the client and end the loop thread."""
        self.call(self.listener.stop())
        if self._task is not None:
            self._task.result(10)
        self.call(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def refer_to(lab: LabAsterisk, user: str, replaces: tuple[str, str, str] | None = None) -> str:
    """A Refer-To for the lab: ``user`` (an extension of the transfer context) on the lab's SIP
    port; with ``replaces`` = (Call-ID, to-tag, from-tag), an attended transfer's
    ``<sip:...?Replaces=...>``. The tags name the dialog as its receiver knows it: to-tag is the
    receiver's own (local) tag."""
    uri = f"sip:{user}@127.0.0.1:{lab.sip_port}"
    if replaces is None:
        return uri
    call_id, to_tag, from_tag = (quote(part, safe="") for part in replaces)
    return f"<{uri}?Replaces={call_id}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}>"


class Call:
    """A recorded caller bridged (by the ooma-lab application) with a tenant's SIP "phone"."""

    def __init__(
        self,
        harness: AriHarness,
        lab: LabAsterisk,
        name: str,
        tenant: str | None,
        seconds: int,
        caller_tenant: str | None = None,
    ) -> None:
        self.harness, self.lab, self.name = harness, lab, name
        self.wav = lab.start_call_recording(name, seconds, f"caller-{name}@ooma-lab-stasis")
        self.caller = harness.wait_event("StasisStart", lambda e: e["args"] == [f"caller-{name}"])["channel"]["id"]
        if caller_tenant is not None:  # the caller is itself a user of some tenant
            harness.request(
                "POST", f"/channels/{self.caller}/variable", variable="OOMA_MOH_TENANT", value=caller_tenant
            )
        self.bridge = harness.request("POST", "/bridges", type="mixing")["id"]
        harness.request("POST", f"/bridges/{self.bridge}/addChannel", channel=self.caller)
        variables = {"PJSIP_HEADER(add,X-Lab-Call)": name}
        if tenant is not None:
            variables["OOMA_MOH_TENANT"] = tenant
        harness.request(
            "POST",
            "/channels",
            endpoint="PJSIP/lab-loop",
            app="ooma-lab",
            appArgs=f"user-{name}",
            body={"variables": variables},
        )
        self.phone = harness.wait_event("StasisStart", lambda e: e["args"] == [f"phone-{name}"])["channel"]["id"]
        self.user = harness.wait_event("StasisStart", lambda e: e["args"] == [f"user-{name}"])["channel"]["id"]
        harness.request("POST", f"/bridges/{self.bridge}/addChannel", channel=self.user)
        harness.request("POST", f"/channels/{self.phone}/moh", mohClass="lab-talk")
        self.started = time.monotonic()  # the recording's first frame: the phone starts talking
        self.extra: list[str] = []
        #: (event Asterisk sends for it, the channel that gets it, when asked) per hold/unhold
        self.asked: list[tuple[str, str, float]] = []

    def at(self, seconds: float) -> float:
        """Sleep until ``seconds`` after the call started; return the exact offset."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))
        return time.monotonic() - self.started

    def hold(self) -> float:
        """The phone holds (re-INVITE a=sendonly, which the user leg receives); returns the offset."""
        offset = time.monotonic() - self.started
        self.asked.append(("ChannelHold", self.user, self.started + offset))
        self.harness.hold(self.phone)
        return offset

    def unhold(self) -> float:
        """The phone takes the call off hold; returns the offset."""
        offset = time.monotonic() - self.started
        self.asked.append(("ChannelUnhold", self.user, self.started + offset))
        self.harness.unhold(self.phone)
        return offset

    def lag(self) -> float:
        """The longest time, over this call's holds and unholds, from asking to the ChannelHold or
        ChannelUnhold event reaching this application: how late Asterisk (and this process) ran
        behind the wall clock. On a quiet machine a few ms; on a busy one it is the slack a
        timing check must allow, measured instead of guessed."""
        worst = 0.0
        count: dict[tuple[str, str], int] = {}
        for kind, channel, asked_at in self.asked:
            nth = count[kind, channel] = count.get((kind, channel), 0) + 1
            events = self.harness.seen(kind, channel)
            if len(events) >= nth:
                worst = max(worst, events[nth - 1]["received_at"] - asked_at)
        return worst

    def record_bridge(self) -> None:
        """Record the bridge through ARI, which turns it into a softmix bridge."""
        self.harness.request(
            "POST", f"/bridges/{self.bridge}/record", name=f"bridge-{self.name}", format="wav", ifExists="overwrite"
        )

    def add_listener(self, name: str, seconds: int) -> Path:
        """Another recorded caller joins the bridge; returns its recording."""
        wav = self.lab.start_call_recording(name, seconds, f"caller-{name}@ooma-lab-stasis")
        other = self.harness.wait_event("StasisStart", lambda e: e["args"] == [f"caller-{name}"])["channel"]["id"]
        self.harness.request("POST", f"/bridges/{self.bridge}/addChannel", channel=other)
        self.extra.append(other)
        return wav

    def add_talker(self) -> str:
        """A third real party that talks (lab-talk tone) joins the bridge; its channel id."""
        self.harness.request(
            "POST", "/channels", endpoint="Local/talk@ooma-lab-talker/n", app="ooma-lab", appArgs=f"third-{self.name}"
        )
        third = str(
            self.harness.wait_event("StasisStart", lambda e: e["args"] == [f"third-{self.name}"])["channel"]["id"]
        )
        self.harness.request("POST", f"/bridges/{self.bridge}/addChannel", channel=third)
        self.extra.append(third)
        return third

    def hangup(self, which: str) -> float:
        """Hang up the channel named by the attribute ``which`` (``"phone"``, ``"caller"``, ...);
        returns the offset."""
        offset = time.monotonic() - self.started
        self.harness.request("DELETE", f"/channels/{getattr(self, which)}")
        return offset

    def refer(self, user: str, context: str = "ooma-lab-xfer-to") -> float:
        """The phone transfers the call blind by SIP REFER to ``user``: the user leg (in the ARI
        bridge) receives it and transfers to ``user@context``. Returns the offset."""
        self.harness.request("POST", f"/channels/{self.user}/variable", variable="TRANSFER_CONTEXT", value=context)
        offset = time.monotonic() - self.started
        self.harness.refer(self.phone, refer_to(self.lab, user))
        return offset

    def transfers_by_app(self) -> None:
        """The provider's application makes the phone's transfers itself: a REFER to the user leg
        becomes a ChannelTransfer event (``PJSIP_TRANSFER_HANDLING(ari-only)``), for
        :meth:`take_transfer`, instead of Asterisk's own blind transfer (docs/holds.md)."""
        self.harness.request(
            "POST", f"/channels/{self.user}/variable", variable="PJSIP_TRANSFER_HANDLING()", value="ari-only"
        )

    def take_transfer(self, endpoint: str, tenant: str | None = None) -> str:
        """The application carries out the phone's REFER (after :meth:`transfers_by_app`): it
        calls the target's ``endpoint`` (``PJSIP/lab-loop`` or another loopback endpoint; its far
        leg enters Stasis as ``phone-<name>_b``, for :meth:`answer_phone`), tells the phone the
        transfer succeeded, hangs up the old user leg and puts the new one (carrying
        OOMA_MOH_TENANT ``tenant`` when given) in the bridge in its place. Returns the Refer-To
        user."""
        event = self.harness.wait_event(
            "ChannelTransfer", lambda e: e["referred_by"]["source_channel"]["id"] == self.user
        )
        user = str(event["refer_to"]["requested_destination"]["destination"])
        variables = {"PJSIP_HEADER(add,X-Lab-Call)": f"{self.name}_b"}
        if tenant is not None:
            variables["OOMA_MOH_TENANT"] = tenant
        self.harness.request(
            "POST",
            "/channels",
            endpoint=endpoint,
            app="ooma-lab",
            appArgs=f"user-{self.name}_b",
            body={"variables": variables},
        )
        new_user = self.harness.wait_event("StasisStart", lambda e: e["args"] == [f"user-{self.name}_b"])
        self.harness.request("POST", f"/channels/{self.user}/transfer_progress", states="channel_answered")
        # the old leg goes first, as a real application would (the other order is handled too:
        # tests/unit/test_hold_rules.py, a joiner's music while the holder leaves)
        self.harness.request("DELETE", f"/channels/{self.user}")
        self.harness.request("POST", f"/bridges/{self.bridge}/addChannel", channel=new_user["channel"]["id"])
        self.extra.append(self.user)
        self.user = new_user["channel"]["id"]
        return user

    def answer_phone(self, phone: str, timeout: float = 15.0) -> float:
        """A new phone (a transfer target, ``phone-<phone>``) answers and talks; it is now the
        phone that holds. Returns the offset at which it talks."""
        event = self.harness.wait_event("StasisStart", lambda e: e["args"] == [f"phone-{phone}"], timeout)
        self.extra.append(self.phone)
        self.phone = event["channel"]["id"]
        self.harness.request("POST", f"/channels/{self.phone}/moh", mohClass="lab-talk")
        return time.monotonic() - self.started

    def finish(self) -> Path:
        """Wait for the recording; tear down what is left of the call."""
        wav = self.lab.wait_recording(self.wav)
        for channel in (self.phone, self.user, self.caller, *self.extra):
            with contextlib.suppress(Exception):  # already gone
                self.harness.request("DELETE", f"/channels/{channel}")
        with contextlib.suppress(Exception):
            self.harness.request("DELETE", f"/bridges/{self.bridge}")
        return wav
