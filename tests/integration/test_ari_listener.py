"""The ARI events listener against Asterisk's own WebSocket races, under device-state churn.

Each test boots a lab Asterisk of its own: the control leaves an application wedged in Asterisk
for good, which must not leak into the suite's shared lab.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ooma_moh.ari.client import AriClient
from ooma_moh.ari.listener import EventListener
from ooma_moh.errors import AriRequestFailed
from ooma_moh.lab import LabAsterisk

CYCLES = 100


@pytest.fixture
def churning_lab(lab_root: Path, tmp_path: Path) -> Iterator[LabAsterisk]:
    """A lab Asterisk of this test's own, its device states changing ~50 times a second."""
    lab = LabAsterisk(tmp_path / "lab")
    try:
        lab.start()
        lab.start_churn()
        lab.start_churn()
        yield lab
    finally:
        lab.stop()


@contextlib.contextmanager
def listener_log() -> Iterator[list[str]]:
    """The messages the listener logs while the block runs."""
    messages: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    recorder = Recorder()
    logging.getLogger("ooma_moh.ari.listener").addHandler(recorder)
    try:
        yield messages
    finally:
        logging.getLogger("ooma_moh.ari.listener").removeHandler(recorder)


def raw_session(lab: LabAsterisk) -> aiohttp.ClientSession:
    """A bare aiohttp session with the lab's ARI credentials (not our client)."""
    token = base64.b64encode(f"{lab.ari_user}:{lab.ari_password}".encode()).decode()
    return aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"})


def events_url(lab: LabAsterisk, app: str, subscribe_all: bool) -> str:
    return lab.ari_url.replace("http://", "ws://") + f"/ari/events?app={app}&subscribeAll={str(subscribe_all).lower()}"


async def eventually(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def test_control_subscribe_all_wedges_asterisk(churning_lab: LabAsterisk) -> None:
    """The control: with ``subscribeAll=true`` (what the listener no longer uses), closing the
    WebSocket while device states change deadlocks the application inside Asterisk; a new
    connection for it then never completes its handshake."""
    url = events_url(churning_lab, "wedge-control", subscribe_all=True)

    async def cycles() -> int | None:
        async with raw_session(churning_lab) as session:
            for i in range(CYCLES):
                try:
                    ws = await asyncio.wait_for(session.ws_connect(url), 5)
                except TimeoutError:
                    return i
                await asyncio.wait_for(ws.receive(), 5)  # close while events are being delivered
                await ws.close()
        return None

    wedged_at = asyncio.run(cycles())
    assert wedged_at is not None, f"{CYCLES} close/reconnect cycles and Asterisk never wedged"
    assert wedged_at > 0  # the first connection always works
    print(f"wedged at close/reconnect cycle {wedged_at}")


def test_listener_reconnects_a_hundred_times_under_churn(churning_lab: LabAsterisk) -> None:
    """Our listener (subscribeAll=false + subscription to every channel and bridge): every one of
    100 drops is followed by a working, registered connection; at the end it still gets events
    for channels it does not own — of the types it asked for only (the event filter, set again
    at each connection) — and stopping it unregisters the application."""
    lab = churning_lab
    app = "ooma-moh-churn"

    async def scenario() -> None:
        client = AriClient(lab.ari_url, lab.ari_user, lab.ari_password)
        created: list[str] = []
        kinds: set[str] = set()
        wanted = {"ChannelCreated", "ChannelDestroyed"}

        async def on_event(event: dict[str, Any]) -> None:
            kinds.add(event.get("type", ""))
            if event.get("type") == "ChannelCreated":
                created.append(event["channel"]["name"])

        listener = EventListener(client, app, on_event, event_types=wanted, min_backoff=0.01)
        task = asyncio.create_task(listener.run())
        for i in range(1, CYCLES + 1):
            await eventually(
                # i bound as a default: mypy cannot infer a lambda with a parameter for Callable[[], bool]
                lambda i=i: listener.connections == i and listener.connected.is_set(),  # type: ignore[misc]
                15,
                f"connection {i} did not come up",
            )
            if i < CYCLES:
                await listener.drop()
        registered = await client.get_application(app)
        assert registered["device_names"] == [], registered
        assert "__AST_CHANNEL_ALL_TOPIC" in registered["channel_ids"], registered
        assert "__AST_BRIDGE_ALL_TOPIC" in registered["bridge_ids"], registered
        assert sorted(e["type"] for e in registered["events_allowed"]) == sorted(wanted), registered

        kinds.clear()  # (the lab's churn before the first filter was set is not this check's)
        await asyncio.to_thread(lab.cli, "channel originate Local/talk@ooma-lab-talker application Wait 1")
        await eventually(
            lambda: any(n.startswith("Local/talk@ooma-lab-talker") for n in created),
            10,
            "no event for a channel another application owns",
        )
        # the originated channel also went through the dialplan, changed state and variables
        assert kinds <= wanted, kinds

        await listener.stop()
        await asyncio.wait_for(task, 10)

        async def gone() -> bool:
            try:
                await client.get_application(app)
            except AriRequestFailed as exc:
                return exc.status == 404
            return False

        for _ in range(200):
            if await gone():
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the application stayed registered after the listener stopped")
        await client.close()

    with listener_log() as messages:
        asyncio.run(scenario())
    dropped = sum("dropped the registration" in m for m in messages)
    print(f"registrations dropped by Asterisk and recovered: {dropped} of {CYCLES}")


def test_listener_taken_over_then_orphaned_reconnects(lab: LabAsterisk) -> None:
    """Another connection takes the application over (ours is told: ApplicationReplaced), then
    closes, so Asterisk unregisters the application while our WebSocket is still open and would
    never deliver another event: the registration check notices and reconnects."""
    app = "ooma-moh-orphan"

    async def scenario(messages: list[str]) -> None:
        client = AriClient(lab.ari_url, lab.ari_user, lab.ari_password)

        async def ignore(event: dict[str, Any]) -> None:
            pass

        listener = EventListener(client, app, ignore, check_interval=0.5)
        task = asyncio.create_task(listener.run())
        await eventually(lambda: listener.connected.is_set(), 10, "listener did not connect")
        async with raw_session(lab) as session:
            other = await session.ws_connect(events_url(lab, app, subscribe_all=False))
            await eventually(lambda: any("took over" in m for m in messages), 5, "no ApplicationReplaced")
            await other.close()
        await eventually(
            lambda: listener.connections == 2 and listener.connected.is_set(),
            10,
            "the orphaned listener did not reconnect",
        )
        assert any("no longer registered" in m for m in messages), messages
        await client.get_application(app)  # registered again (404 would raise)
        await listener.stop()
        await asyncio.wait_for(task, 10)
        await client.close()

    with listener_log() as messages:
        asyncio.run(scenario(messages))
