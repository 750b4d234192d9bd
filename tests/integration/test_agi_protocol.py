"""The FastAGI server and the classic AGI script, with the test playing Asterisk's side over a
real socket (or real pipes): well-formed requests, garbage, early hangup, slow clients, load."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.lab import free_port
from ooma_moh.service import MohService
from tests.audio import tone
from tests.integration.conftest import settings_env, wait_for_port

ENV = ("agi_network: yes\nagi_network_script: {script}\nagi_request: agi://127.0.0.1/{script}\n"
       "agi_channel: PJSIP/trunk-00000001\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1.1\n"
       "agi_callerid: 5551234\nagi_context: from-trunk\nagi_extension: 100\nagi_priority: 1\n"
       "agi_accountcode: {account}\n{args}\n")


@pytest.fixture
def server(settings: Settings, service: MohService, tmp_path: Path):
    service.upload("alpha", tone(tmp_path / "a.wav", 440, seconds=2), accept_disclaimer=True)
    service.upload("gamma", tone(tmp_path / "g.wav", 440, seconds=2), accept_disclaimer=True)
    service.delete("gamma")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ooma_moh", "serve", "agi", "--listen", f"127.0.0.1:{port}"],
                            env=settings_env(settings), stderr=subprocess.PIPE, text=True)
    wait_for_port(port, proc)
    yield port, proc
    proc.terminate()
    proc.wait(10)


class FakeAsterisk:
    """Asterisk's side of one FastAGI connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rwb")

    def send(self, text: str) -> None:
        self.file.write(text.encode())
        self.file.flush()

    def command(self) -> str:
        return self.file.readline().decode()

    def closed(self) -> bool:
        return self.file.readline() == b""

    def run(self, script: str = "moh", account: str = "", args: tuple[str, ...] = (),
            variable: str | None = None) -> dict[str, str]:
        """A whole request; returns the variables the server set."""
        arg_lines = "".join(f"agi_arg_{i}: {a}\n" for i, a in enumerate(args, 1))
        self.send(ENV.format(script=script, account=account, args=arg_lines))
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


@pytest.mark.parametrize("request_kwargs, expected", [
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
])
def test_route_sets_class_and_variable(server, request_kwargs: dict, expected: str) -> None:
    port, _ = server
    values = FakeAsterisk(port).run(**request_kwargs)
    assert values == {"CHANNEL(musicclass)": expected, "OOMA_MOH_CLASS": expected}


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\xff" * 100 + b"\n",
                                     b"x" * 20000 + b"\n"])
def test_garbage_is_closed_and_server_keeps_serving(server, garbage: bytes) -> None:
    port, proc = server
    client = FakeAsterisk(port)
    client.file.write(garbage)
    client.file.flush()
    assert client.closed()
    assert FakeAsterisk(port).run(args=("alpha",))["OOMA_MOH_CLASS"] == "tenant-alpha"
    assert proc.poll() is None


def test_hangup_mid_request_and_hangup_response(server) -> None:
    port, _ = server
    half = FakeAsterisk(port)
    half.send("agi_network: yes\nagi_network_script: moh\n")
    half.sock.close()
    dead = FakeAsterisk(port)
    dead.send(ENV.format(script="moh", account="alpha", args=""))
    assert dead.command().startswith("GET VARIABLE OOMA_MOH_TENANT")
    dead.send("HANGUP\n")
    assert dead.closed()  # nothing more is sent to a dead channel
    assert FakeAsterisk(port).run(account="alpha")["OOMA_MOH_CLASS"] == "tenant-alpha"


def test_slow_client_times_out_without_blocking_others(server) -> None:
    port, _ = server
    slow = FakeAsterisk(port)
    slow.send("agi_network: yes\n")  # ... and then nothing
    started = time.monotonic()
    for _ in range(20):
        assert FakeAsterisk(port).run(args=("alpha",))["OOMA_MOH_CLASS"] == "tenant-alpha"
    assert time.monotonic() - started < 5  # served while the slow client still hangs
    slow.sock.settimeout(15)
    assert slow.closed()  # the server gave up on it (io timeout 5 s)


def test_many_concurrent_connections(server) -> None:
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


def test_classic_agi_script_over_pipes(settings: Settings, service: MohService, tmp_path: Path) -> None:
    service.upload("alpha", tone(tmp_path / "a.wav", 440, seconds=2), accept_disclaimer=True)
    for argv_tenant, account, expected in (("alpha", "", "tenant-alpha"), ("", "alpha", "tenant-alpha"),
                                           ("", "nobody", "default")):
        proc = subprocess.Popen([sys.executable, "-m", "ooma_moh.agi.script"], env=settings_env(settings),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        assert values == {"CHANNEL(musicclass)": expected, "OOMA_MOH_CLASS": expected}, proc.stderr.read()
        assert f"class={expected}" in proc.stderr.read()
