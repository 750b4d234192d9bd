"""ooma_moh.systemd against a real AF_UNIX datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ooma_moh import systemd

#: Bound of every wait for a datagram (the test fails, rather than hangs, past it).
WAIT_S = 5.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket at a path, announced in NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(WAIT_S)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_stopping_status_deliver_their_assignment(manager: socket.socket) -> None:
    assert systemd.ready() is True
    assert receive(manager) == "READY=1"
    assert systemd.stopping() is True
    assert receive(manager) == "STOPPING=1"
    assert systemd.status("serving 3 bridges\nREADY=1") is True
    assert receive(manager) == "STATUS=serving 3 bridges READY=1"  # a line break cannot add an assignment
    assert systemd.notify("READY=1\nSTATUS=up") is True
    assert receive(manager) == "READY=1\nSTATUS=up"


def test_without_notify_socket_nothing_is_sent(tmp_path: Path) -> None:
    assert "NOTIFY_SOCKET" not in os.environ
    assert systemd.ready() is False
    assert systemd.notify("WATCHDOG=1") is False


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_unusable_notify_socket_is_ignored(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd.ready() is False


def test_missing_socket_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.ready() is False


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ooma-moh-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(WAIT_S)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready() is True
        assert receive(sock) == "READY=1"


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert systemd.watchdog_interval() is None


def test_watchdog_pings_at_half_the_period(manager: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    async def run() -> list[tuple[float, str]]:
        task = asyncio.create_task(systemd.watchdog())
        try:
            received = []
            for _ in range(3):  # the socket's timeout bounds each wait
                message = await asyncio.to_thread(receive, manager)
                received.append((time.monotonic(), message))
            assert not task.done()  # runs until cancelled
            return received
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    received = asyncio.run(run())
    assert [message for _, message in received] == ["WATCHDOG=1"] * 3
    gaps = [later - earlier for (earlier, _), (later, _) in zip(received, received[1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # never faster than half the period


def test_watchdog_interval_override(manager: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "600000000")  # 5 min: the override decides

    async def run() -> list[str]:
        task = asyncio.create_task(systemd.watchdog(interval_override=0.05))
        try:
            return [await asyncio.to_thread(receive, manager) for _ in range(2)]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert asyncio.run(run()) == ["WATCHDOG=1", "WATCHDOG=1"]


@pytest.mark.parametrize("case", ["unset", "other-pid"])
def test_watchdog_returns_at_once_when_not_asked(
    case: str, manager: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case == "other-pid":
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))

    async def run() -> None:
        await asyncio.wait_for(systemd.watchdog(interval_override=0.01), WAIT_S)

    asyncio.run(run())
    manager.settimeout(0)
    with pytest.raises(BlockingIOError):
        manager.recv(4096)  # and sent nothing


def test_a_server_sets_its_start_up_aside_from_the_collector_before_ready(
    manager: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve_until_stopped`` (every server's life): what the start-up made is frozen (a full
    garbage collection no longer walks it: no pause of the loop in a burst of holds) by the time
    systemd hears READY=1."""
    import gc

    from ooma_moh import lifetime

    frozen_at_ready: list[int] = []
    real_ready = systemd.ready

    def ready() -> bool:
        frozen_at_ready.append(gc.get_freeze_count())
        return real_ready()

    monkeypatch.setattr(systemd, "ready", ready)  # lifetime calls it as systemd.ready
    gc.unfreeze()
    started = [object() for _ in range(1000)]  # the start-up's objects

    async def run() -> None:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)  # a watched part that has ended: the server stops at once
        await lifetime.serve_until_stopped(done)

    try:
        asyncio.run(run())
    finally:
        gc.unfreeze()
    assert receive(manager) == "READY=1"
    assert len(frozen_at_ready) == 1 and frozen_at_ready[0] >= len(started)
