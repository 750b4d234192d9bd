"""The FastAGI server and the classic AGI script, with the test playing Asterisk's side over a
real socket (or real pipes): well-formed requests, garbage, early hangup, slow clients, load, the
connection cap, the environment byte budget, the overall deadline, log lines safe from forging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack

import pytest

from ooma_moh.agi.server import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_ENV_BYTES, FastAgiServer
from ooma_moh.config import Settings
from ooma_moh.lab import free_port
from ooma_moh.memview import COALESCE_S
from ooma_moh.resolve import ClassResolver
from ooma_moh.service import MohService
from tests.audio import tone
from tests.integration.conftest import settings_env, wait_for_port

ENV = (
    "agi_network: yes\nagi_network_script: {script}\nagi_request: agi://127.0.0.1/{script}\n"
    "agi_channel: PJSIP/trunk-00000001\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1.1\n"
    "agi_callerid: 5551234\nagi_context: from-trunk\nagi_extension: 100\nagi_priority: 1\n"
    "agi_accountcode: {account}\n{args}\n"
)

#: The ``server`` fixture: the port of ``ooma-moh serve agi`` and its process.
AgiServer = tuple[int, subprocess.Popen[bytes]]


@pytest.fixture
def server(settings: Settings, service: MohService, tmp_path: Path) -> Iterator[AgiServer]:
    service.upload("alpha", tone(tmp_path / "a.wav", 440, seconds=2), accept_disclaimer=True, accepted_by="tester")
    service.upload("gamma", tone(tmp_path / "g.wav", 440, seconds=2), accept_disclaimer=True, accepted_by="tester")
    service.delete("gamma")
    port = free_port()
    # The log goes to a file, not a pipe: nobody reads a pipe while the test runs, and a server
    # blocked on a full pipe (64 KiB: a few hundred connections' lines) stops answering.
    with open(tmp_path / "agi.log", "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ooma_moh", "serve", "agi", "--listen", f"127.0.0.1:{port}"],
            env=settings_env(settings),
            stderr=log_file,
        )
    wait_for_port(port, proc)
    yield port, proc
    proc.terminate()
    proc.wait(10)


class Limits(TypedDict, total=False):
    """:class:`FastAgiServer`'s limits."""

    io_timeout: float
    deadline: float
    max_env_bytes: int
    max_connections: int


class InProcessServer:
    """A :class:`FastAgiServer` on its own event loop in a thread of the test process: its log
    records reach ``caplog``, and its limits can be made small."""

    def __init__(self, resolver: ClassResolver, **limits: Unpack[Limits]) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = FastAgiServer(resolver, **limits)
        self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        self.thread = threading.Thread(target=self.loop.run_forever, name="fastagi-test", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Close the server (as on SIGTERM), end its connections, stop the loop."""
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        await self.server.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if others:  # let connections the test closed end on their own, then cancel the rest
            await asyncio.wait(others, timeout=2)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


class StartServer(Protocol):
    """The ``in_process`` fixture."""

    def __call__(self, **limits: Unpack[Limits]) -> InProcessServer: ...


@pytest.fixture
def in_process(settings: Settings, service: MohService, tmp_path: Path) -> Iterator[StartServer]:
    """``in_process(**limits)`` -> a running :class:`InProcessServer` (tenant ``alpha`` on file)."""
    service.upload("alpha", tone(tmp_path / "a.wav", 440, seconds=2), accept_disclaimer=True, accepted_by="tester")
    started: list[InProcessServer] = []

    def start(**limits: Unpack[Limits]) -> InProcessServer:
        started.append(InProcessServer(ClassResolver(service.catalog, settings.class_prefix), **limits))
        return started[-1]

    yield start
    for instance in started:
        instance.close()


def env_block(script: str = "moh", account: str = "", args: tuple[str, ...] = ()) -> str:
    """The environment block Asterisk sends for one request."""
    arg_lines = "".join(f"agi_arg_{i}: {a}\n" for i, a in enumerate(args, 1))
    return ENV.format(script=script, account=account, args=arg_lines)


def padded(block: str, total: int) -> str:
    """``block`` with ``agi_padNN`` lines (under 4 KB each) before its blank line: ``total`` bytes."""
    head = block[:-1]
    need = total - len(head.encode()) - 1
    count = -(-need // 4000)
    sizes = [need // count] * count
    sizes[-1] += need - sum(sizes)
    result = head + "".join(f"agi_pad{i:02d}: ".ljust(size - 1, "x") + "\n" for i, size in enumerate(sizes)) + "\n"
    assert len(result.encode()) == total
    return result


class FakeAsterisk:
    """Asterisk's side of one FastAGI connection; every one opened is closed when its test ends
    (:func:`close_fake_connections`), a whole request's as soon as the server has closed it."""

    opened: list[FakeAsterisk] = []

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rwb")
        FakeAsterisk.opened.append(self)

    def close(self) -> None:
        """Close the connection (the buffered file holds the socket open until it is closed too)."""
        with contextlib.suppress(OSError):
            self.file.close()
        self.sock.close()

    def send(self, text: str) -> None:
        self.file.write(text.encode())
        self.file.flush()

    def command(self) -> str:
        return self.file.readline().decode()

    def closed(self) -> bool:
        """True once the server has closed the connection (a reset, when it closed with our bytes
        still unread, counts too); False if it sent a line instead."""
        try:
            return self.file.readline() == b""
        except ConnectionResetError:
            return True

    def run(
        self, script: str = "moh", account: str = "", args: tuple[str, ...] = (), variable: str | None = None
    ) -> dict[str, str]:
        """A whole request; returns the variables the server set."""
        self.send(env_block(script, account, args))
        try:
            return self.answer(variable)
        finally:
            self.close()

    def answer(self, variable: str | None = None) -> dict[str, str]:
        """Answer the server's commands until it closes; returns the variables it set."""
        values = {}
        while line := self.command():
            parts = line.split(None, 3)
            if parts[:2] == ["GET", "VARIABLE"]:
                self.send(f"200 result=1 ({variable})\n" if variable else "200 result=0\n")
            elif parts[:2] == ["SET", "VARIABLE"]:
                values[parts[2]] = parts[3].strip().strip('"')
                self.send("200 result=1\n")
            else:
                raise AssertionError(f"unexpected command {line!r}")
        return values


@pytest.fixture(autouse=True)
def close_fake_connections() -> Iterator[None]:
    yield
    while FakeAsterisk.opened:
        FakeAsterisk.opened.pop().close()


@pytest.mark.parametrize(
    "request_kwargs, expected",
    [
        ({"script": "moh?tenant=alpha"}, "tenant-alpha"),
        ({"args": ("alpha",)}, "tenant-alpha"),
        ({"variable": "alpha"}, "tenant-alpha"),
        ({"account": "alpha"}, "tenant-alpha"),
        ({"args": ("alpha",), "variable": "nobody", "account": "nobody"}, "tenant-alpha"),
        ({"variable": "alpha", "account": "nobody"}, "tenant-alpha"),
        ({"account": "gamma"}, "default"),
        ({"account": "nobody"}, "default"),
        ({}, "default"),
        ({"args": ("../etc",)}, "default"),
        ({"script": "other", "args": ("alpha",)}, "default"),
    ],
)
def test_route_sets_class_and_variable(server: AgiServer, request_kwargs: dict[str, Any], expected: str) -> None:
    port, _ = server
    values = FakeAsterisk(port).run(**request_kwargs)
    assert values == {"CHANNEL(musicclass)": expected, "OOMA_MOH_CLASS": expected}


@pytest.mark.embedded_only  # SQLite's data_version; on PostgreSQL answers are cached 2 s (docs/agi.md)
def test_a_catalog_change_reaches_the_next_call_at_once(server: AgiServer, service: MohService, tmp_path: Path) -> None:
    """``serve agi`` keeps each tenant's answer until the SQLite catalog's ``data_version``
    moves (issue 24 item 2), not for a fixed 2 s: a deletion or an upload committed by another
    process is what the next call hears."""
    port, _ = server
    alpha = {"CHANNEL(musicclass)": "tenant-alpha", "OOMA_MOH_CLASS": "tenant-alpha"}
    default = {"CHANNEL(musicclass)": "default", "OOMA_MOH_CLASS": "default"}
    for _ in range(3):
        assert FakeAsterisk(port).run(script="moh?tenant=alpha") == alpha
    service.delete("alpha")
    time.sleep(COALESCE_S * 5)  # the marks are read at most every COALESCE_S (memview rule 2)
    assert FakeAsterisk(port).run(script="moh?tenant=alpha") == default
    service.upload("alpha", tone(tmp_path / "a2.wav", 660, seconds=2), accept_disclaimer=True, accepted_by="tester")
    time.sleep(COALESCE_S * 5)
    assert FakeAsterisk(port).run(script="moh?tenant=alpha") == alpha


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\xff" * 100 + b"\n", b"x" * 20000 + b"\n"]
)
def test_garbage_is_closed_and_server_keeps_serving(server: AgiServer, garbage: bytes) -> None:
    port, proc = server
    client = FakeAsterisk(port)
    client.file.write(garbage)
    client.file.flush()
    assert client.closed()
    assert FakeAsterisk(port).run(args=("alpha",))["OOMA_MOH_CLASS"] == "tenant-alpha"
    assert proc.poll() is None


def test_hangup_mid_request_and_hangup_response(server: AgiServer) -> None:
    port, _ = server
    half = FakeAsterisk(port)
    half.send("agi_network: yes\nagi_network_script: moh\n")
    half.close()  # Asterisk hangs up mid-request
    dead = FakeAsterisk(port)
    dead.send(ENV.format(script="moh", account="alpha", args=""))
    assert dead.command().startswith("GET VARIABLE OOMA_MOH_TENANT")
    dead.send("HANGUP\n")
    assert dead.closed()  # nothing more is sent to a dead channel
    assert FakeAsterisk(port).run(account="alpha")["OOMA_MOH_CLASS"] == "tenant-alpha"


def test_slow_client_times_out_without_blocking_others(server: AgiServer) -> None:
    port, _ = server
    slow = FakeAsterisk(port)
    slow.send("agi_network: yes\n")  # ... and then nothing
    started = time.monotonic()
    for _ in range(20):
        assert FakeAsterisk(port).run(args=("alpha",))["OOMA_MOH_CLASS"] == "tenant-alpha"
    assert time.monotonic() - started < 5  # served while the slow client still hangs
    slow.sock.settimeout(15)
    assert slow.closed()  # the server gave up on it (io timeout 5 s)


def test_many_concurrent_connections(server: AgiServer) -> None:
    port, _ = server
    results: list[str] = []

    def one(i: int) -> None:
        results.append(FakeAsterisk(port).run(account="alpha" if i % 2 else "nobody")["OOMA_MOH_CLASS"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["default"] * 100 + ["tenant-alpha"] * 100


def test_connections_over_the_cap_are_closed_at_once(in_process: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ooma_moh.agi")
    # a read timeout longer than the test: on a busy machine, opening 266 connections one after
    # another took more than the default 5 s, and the first holders were closed as idle
    agi = in_process(io_timeout=60.0, max_connections=DEFAULT_MAX_CONNECTIONS)
    text = env_block(args=("alpha",))
    first_line, rest = text.split("\n", 1)
    holders = [FakeAsterisk(agi.port) for _ in range(DEFAULT_MAX_CONNECTIONS)]
    for holder in holders:  # each in the middle of its request: it holds a slot
        holder.send(first_line + "\n")
    extras = [FakeAsterisk(agi.port) for _ in range(10)]
    for extra in extras:
        extra.sock.settimeout(2)  # admitted instead of closed, it would wait for the read timeout
        assert extra.closed()

    def finish(holder: FakeAsterisk) -> str:
        holder.send(rest)
        return holder.answer()["OOMA_MOH_CLASS"]

    # the admitted ones were not disturbed: all finish at once, as many Asterisk channels would
    with ThreadPoolExecutor(len(holders)) as pool:
        assert list(pool.map(finish, holders)) == ["tenant-alpha"] * len(holders)
    assert FakeAsterisk(agi.port).run(args=("alpha",))["OOMA_MOH_CLASS"] == "tenant-alpha"
    agi.close()  # the last refusals are logged on the way out
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= 2, refusals  # one line at once, one for the rest: not ten
    assert sum(int(line.split("refused ")[1].split()[0]) for line in refusals) == 10


def test_refusals_are_logged_in_aggregate(in_process: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ooma_moh.agi")
    agi = in_process(max_connections=2)
    holders = [FakeAsterisk(agi.port) for _ in range(2)]
    for holder in holders:
        holder.send("agi_network: yes\n")
    for _ in range(50):
        extra = FakeAsterisk(agi.port)
        extra.sock.settimeout(2)
        assert extra.closed()
    assert agi.server.refused == 50
    for holder in holders:
        holder.close()
    agi.close()
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert len(refusals) == 2, refusals  # the first at once, the other 49 together at close
    assert "refused 1 " in refusals[0] and "refused 49 " in refusals[1]


@pytest.mark.parametrize("over", [0, 1])
def test_environment_block_over_the_byte_budget_is_refused(server: AgiServer, over: int) -> None:
    port, proc = server
    client = FakeAsterisk(port)
    client.send(padded(env_block(args=("alpha",)), DEFAULT_MAX_ENV_BYTES + over))
    if over:
        assert client.closed()  # refused before any command
    else:
        assert client.answer()["OOMA_MOH_CLASS"] == "tenant-alpha"
    assert FakeAsterisk(port).run(args=("alpha",))["OOMA_MOH_CLASS"] == "tenant-alpha"
    assert proc.poll() is None


def test_drip_fed_connection_is_dropped_at_the_deadline(
    in_process: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ooma_moh.agi")
    agi = in_process(io_timeout=1.0, deadline=2.0)
    client = FakeAsterisk(agi.port)
    started = time.monotonic()
    closed = False
    while not closed and time.monotonic() - started < 6:
        try:  # one line every 0.2 s: the 1 s io timeout alone would never fire
            client.sock.sendall(b"agi_drip: x\n")
            closed = bool(select.select([client.sock], [], [], 0.2)[0]) and client.sock.recv(1) == b""
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    assert closed
    assert time.monotonic() - started < 4
    assert any("deadline" in r.getMessage() for r in caplog.records)
    assert FakeAsterisk(agi.port).run(args=("alpha",))["OOMA_MOH_CLASS"] == "tenant-alpha"


def test_outside_values_are_logged_escaped(in_process: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ooma_moh.agi")
    agi = in_process()
    FakeAsterisk(agi.port).run(script="moh?tenant=a%0aFAKE LINE")
    FakeAsterisk(agi.port).run(script="moh?tenant=%E2%80%A8x")
    FakeAsterisk(agi.port).run(account="acct\x1b[31mRED")
    FakeAsterisk(agi.port).run(variable="v\rw")
    FakeAsterisk(agi.port).run(script="mo\x1b[2Jh", args=("alpha",))
    FakeAsterisk(agi.port).run(args=("x class=tenant-vip",))
    garbage = FakeAsterisk(agi.port)
    garbage.send("agi_network: yes\nHELLO \x1b]0;pwned\x07\n")
    assert garbage.closed()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ooma_moh.agi")]
    for message in messages:
        assert message.isascii() and message.isprintable(), repr(message)
    logged = "\n".join(messages)
    for expected in (
        'tenant="a\\nFAKE LINE"',
        "tenant=\\u2028x",
        "tenant=acct\\x1b[31mRED",
        "tenant=v\\rw",
        "unknown route 'mo\\x1b[2Jh'",
        'tenant="x class=tenant-vip"',
        "\\x1b]0;pwned\\x07",
    ):
        assert expected in logged, (expected, messages)


@contextlib.contextmanager
def classic_agi(settings: Settings) -> Iterator[subprocess.Popen[str]]:
    """The classic AGI script as Asterisk runs it, over its three pipes (closed at the end)."""
    with subprocess.Popen(
        [sys.executable, "-m", "ooma_moh.agi.script"],
        env=settings_env(settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        yield proc


def test_classic_agi_script_logs_escaped(settings: Settings, service: MohService) -> None:
    with classic_agi(settings) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all three are pipes
        proc.stdin.write("agi_request: ooma-moh-agi\nagi_channel: PJSIP/x-1\nagi_accountcode: acct\x1b[31mRED\n\n")
        proc.stdin.flush()
        while line := proc.stdout.readline():
            proc.stdin.write("200 result=0\n" if line.startswith("GET") else "200 result=1\n")
            proc.stdin.flush()
        assert proc.wait(10) == 0
        lines = proc.stderr.read().splitlines()
        assert len(lines) == 1 and lines[0].isascii() and lines[0].isprintable(), lines
        assert "tenant=acct\\x1b[31mRED " in lines[0] and "class=default" in lines[0]


def test_classic_agi_script_over_pipes(settings: Settings, service: MohService, tmp_path: Path) -> None:
    service.upload("alpha", tone(tmp_path / "a.wav", 440, seconds=2), accept_disclaimer=True, accepted_by="tester")
    for argv_tenant, account, expected in (
        ("alpha", "", "tenant-alpha"),
        ("", "alpha", "tenant-alpha"),
        ("", "nobody", "default"),
    ):
        values, said = run_classic_agi(settings, argv_tenant, account)
        assert values == {"CHANNEL(musicclass)": expected, "OOMA_MOH_CLASS": expected}, said
        assert f"class={expected}" in said


def run_classic_agi(settings: Settings, argv_tenant: str = "", account: str = "") -> tuple[dict[str, str], str]:
    """One call of the classic script, answering as Asterisk would (no OOMA_MOH_TENANT on the
    channel): the variables it set, and its stderr."""
    with classic_agi(settings) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all three are pipes
        args = f"agi_arg_1: {argv_tenant}\n" if argv_tenant else ""
        proc.stdin.write(f"agi_request: ooma-moh-agi\nagi_channel: PJSIP/x-1\nagi_accountcode: {account}\n{args}\n")
        proc.stdin.flush()
        values = {}
        while line := proc.stdout.readline():
            parts = line.split(None, 3)
            if parts[:2] == ["GET", "VARIABLE"]:
                proc.stdin.write("200 result=0\n")
            else:  # pyst2 quotes the name too, as AGI allows
                values[parts[2].strip('"')] = parts[3].strip().strip('"')
                proc.stdin.write("200 result=1\n")
            proc.stdin.flush()
        assert proc.wait(10) == 0
        return values, proc.stderr.read()
