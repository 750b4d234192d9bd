"""The defects of issue 13, each reproduced as the operator met it: real `ooma-moh` and
`ooma-moh-agi` processes, real sockets, and the lab Asterisk where Asterisk is involved.

1. a listener on a port in use is one `Error:` line and exit 1, not a traceback;
2. `ooma-moh-agi --help` prints its usage; a bad invocation is one line;
3. `--json` is accepted by every command but `demo` (long-running ones: JSON log lines);
4. `sync` says `reload: pending` when the reload is pending, never `reload: none` next to it;
5. `serve ari` with a refused ARI password says so, once per attempt, naming the settings;
6. `sync --all` touches only the realtime rows ooma-moh wrote (and adopts those of an earlier
   ooma-moh), whatever else shares the database;
7. the sample dialplan's phones context reaches the sample endpoint (`acme-100`, not only numbers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pty
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import click
import pytest

from ooma_moh.cli import main as cli_main
from ooma_moh.config import Settings
from ooma_moh.lab import TALK_TONE, LabAsterisk
from ooma_moh.publish import REALTIME_SCHEMA
from ooma_moh.service import MohService
from tests.audio import tone
from tests.integration.conftest import settings_env, tones_heard, wait_for_port
from tests.integration.test_metrics import get

A = 440.0
AGI_SCRIPT = Path(sys.executable).parent / "ooma-moh-agi"


def ooma_moh(settings: Settings, *args: str, code: int | None = 0, timeout: float = 120) -> tuple[str, str]:
    """Run `ooma-moh ARGS` as its own process with ``settings``; (stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ooma_moh", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout, proc.stderr


@contextlib.contextmanager
def port_in_use() -> Iterator[int]:
    """A port something else listens on for the duration."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return cast(int, probe.getsockname()[1])  # (host, port) of an AF_INET socket


def upload(service: MohService, tenant: str, freq: float, tmp: Path) -> None:
    service.upload(
        tenant, tone(tmp / f"{tenant}-{int(freq)}.wav", freq, seconds=2), accept_disclaimer=True, accepted_by="tester"
    )


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


class Served:
    """A long-running command with its stdout and stderr in files."""

    def __init__(self, settings: Settings, command: tuple[str, ...], directory: Path) -> None:
        self.out, self.err = directory / "stdout", directory / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:  # files, not pipes nobody reads
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ooma_moh", *command], env=settings_env(settings), stdout=out, stderr=err
            )

    def terminate(self) -> tuple[str, str]:
        """SIGTERM; the process must end cleanly. (stdout, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        out, err = self.out.read_text(), self.err.read_text()
        assert self.proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        return out, err


# -- 1. a port in use -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command, setting",
    [
        (("serve", "agi", "--listen", "{port}"), "agi_listen"),
        (("serve", "http", "--listen", "{port}"), "http_listen"),
        (("serve", "agi", "--listen", "127.0.0.1:0", "--metrics-listen", "{port}"), "metrics_listen"),
        (("serve", "http", "--listen", "127.0.0.1:0", "--metrics-listen", "{port}"), "metrics_listen"),
        (("serve", "ari", "--metrics-listen", "{port}"), "metrics_listen"),
        (("agent", "--metrics-listen", "{port}"), "metrics_listen"),
    ],
)
def test_port_in_use_is_one_error_line(
    settings: Settings, service: MohService, command: tuple[str, ...], setting: str
) -> None:
    with port_in_use() as port:
        address = f"127.0.0.1:{port}"
        out, err = ooma_moh(settings, *(a.format(port=address) for a in command), code=1, timeout=60)
    assert out == ""
    expected = f"Error: {setting} {address}: cannot listen (address already in use)\n"
    if command[0] == "agent" and not settings.database_url:  # the embedded pass: no agent without PostgreSQL
        expected = "Error: the agent needs the shared catalog: set OOMA_MOH_DATABASE_URL\n"
    assert err == expected, err


# -- 2. the classic AGI script by hand --------------------------------------------------------------
def agi_script(
    *args: str, stdin: int | str | None = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    text_input = stdin if isinstance(stdin, str) else None
    return subprocess.run(
        [str(AGI_SCRIPT), *args],
        stdin=None if isinstance(stdin, str) else stdin,  # the same test as text_input's, for mypy
        input=text_input,
        capture_output=True,
        text=True,
        timeout=60,
        env=env or dict(os.environ),
    )


def test_classic_agi_help_and_bad_invocations() -> None:
    assert AGI_SCRIPT.exists(), "the ooma-moh-agi entry point is installed next to the interpreter"
    for flag in ("--help", "-h"):
        shown = agi_script(flag)
        assert shown.returncode == 0 and shown.stderr == "", shown
        assert shown.stdout.startswith("usage: ooma-moh-agi [TENANT]\n")
        assert "AGI(ooma-moh-agi,acme)" in shown.stdout and "OOMA_MOH_HOME" in shown.stdout

    def one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
        assert result.returncode == 2 and result.stdout == "", result
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("ooma-moh-agi: "), result.stderr
        assert "Traceback" not in result.stderr
        for word in words:
            assert word in result.stderr, result.stderr

    one_line(agi_script("--bogus"), "unknown option '--bogus'", "--help")
    one_line(agi_script(), "no AGI environment on stdin", "AGI(ooma-moh-agi[,TENANT])")  # empty stdin
    one_line(agi_script("acme", stdin="hello\nworld\n\n"), "not an AGI environment")
    binary = subprocess.run([str(AGI_SCRIPT)], input=b"\xff\xfe\x00garbage\n\n", capture_output=True, timeout=60)
    one_line(
        subprocess.CompletedProcess(binary.args, binary.returncode, binary.stdout.decode(), binary.stderr.decode()),
        "AGI environment",
    )
    controller, terminal = pty.openpty()  # run from an operator's shell: stdin is a terminal
    try:
        one_line(agi_script("acme", stdin=terminal), "stdin is a terminal")
    finally:
        os.close(controller)
        os.close(terminal)


def test_classic_agi_channel_gone_mid_request(settings: Settings, service: MohService) -> None:
    """Asterisk closes the pipe right after the environment (the caller hung up): still no
    traceback, one line, the call is not failed by us (exit 0)."""
    result = agi_script(
        stdin="agi_request: ooma-moh-agi\nagi_channel: PJSIP/x-1\nagi_arg_1: alpha\n\n", env=settings_env(settings)
    )
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr and "tenant=alpha" in result.stderr, result.stderr
    assert "class=default" in result.stderr and "unknown tenant" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 2, result.stderr  # what went wrong, then the decision


# -- 3. --json everywhere -----------------------------------------------------------------------------
def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            if command.invoke_without_command:  # `endpoints` alone lists
                yield (*prefix, name), command
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_but_demo_accepts_json() -> None:
    """What docs/cli.md says: every command accepts --json, except `demo`."""
    without = sorted(
        " ".join(path)
        for path, command in leaf_commands(cli_main)
        if not any("--json" in p.opts for p in command.params)
    )
    assert without == ["demo"]


def test_endpoints_set_and_remove_print_json(settings: Settings, service: MohService) -> None:
    out, _ = ooma_moh(settings, "endpoints", "set", "PJSIP/acme-100", "acme", "--json")
    assert json.loads(out) == {"endpoint": "PJSIP/acme-100", "tenant": "acme"}
    out, _ = ooma_moh(settings, "endpoints", "--json", "set", "PJSIP/acme-101", "acme")  # on the group
    assert json.loads(out) == {"endpoint": "PJSIP/acme-101", "tenant": "acme"}
    out, _ = ooma_moh(settings, "endpoints", "--json")
    assert json.loads(out) == {"PJSIP/acme-100": "acme", "PJSIP/acme-101": "acme"}
    out, _ = ooma_moh(settings, "endpoints", "remove", "PJSIP/acme-100", "--json")
    assert json.loads(out) == {"endpoint": "PJSIP/acme-100", "tenant": None}
    assert json.loads(ooma_moh(settings, "endpoints", "--json")[0]) == {"PJSIP/acme-101": "acme"}
    out, _ = ooma_moh(settings, "endpoints", "remove", "PJSIP/acme-101")
    assert out == "PJSIP/acme-101 unmapped\n"


def served(settings: Settings, *command: str, port: int, directory: Path) -> Served:
    """A long-running command, once it listens on ``port`` and has logged its first line (its
    SIGTERM handler is in place right after)."""
    served = Served(settings, command, directory)
    wait_for_port(port, served.proc)
    wait_until(lambda: served.err.read_text().count("\n") >= 1, "the first log line")
    time.sleep(0.2)
    return served


@pytest.mark.parametrize(
    "command",
    [
        ("serve", "agi", "--listen", "127.0.0.1:{port}"),
        ("serve", "http", "--listen", "127.0.0.1:{port}"),
        ("serve", "ari", "--metrics-listen", "127.0.0.1:{port}"),
    ],
)
def test_long_running_commands_take_json_for_json_logs(
    settings: Settings, service: MohService, command: tuple[str, ...], tmp_path: Path
) -> None:
    # serve ari: Asterisk unreachable, so it logs its retries; the metrics port says it is up
    settings = dataclasses.replace(settings, ari_url=f"http://127.0.0.1:{closed_port()}")
    port = free_tcp_port()
    proc = served(settings, *(a.format(port=port) for a in command), "--json", port=port, directory=tmp_path)
    if command[1] == "ari":
        time.sleep(1.0)  # a couple of failed attempts
    out, err = proc.terminate()
    entries = [json.loads(line) for line in err.splitlines()]  # every line one JSON object
    assert entries and all({"time", "level", "logger", "message"} <= e.keys() for e in entries), entries
    assert out == ""
    _, usage = ooma_moh(settings, *(a.format(port=port) for a in command), "--json", "--log-format", "text", code=2)
    assert "--json means --log-format json" in usage


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return cast(int, probe.getsockname()[1])  # (host, port) of an AF_INET socket


# -- 4. sync's report when the reload is pending -----------------------------------------------------
def test_sync_says_reload_pending_when_it_is(settings: Settings, service: MohService, tmp_path: Path) -> None:
    upload(service, "acme", A, tmp_path)
    static = dataclasses.replace(settings, publish_mode="static", ari_url=f"http://127.0.0.1:{closed_port()}")
    out, err = ooma_moh(static, "sync", "--all", code=1)
    assert out.splitlines()[0].split()[:2] == ["added", "tenant-acme"], out
    assert "reload: pending (the next sync retries it)" in out, out
    assert "reload: none" not in out and "reload is pending" in err and err.count("\n") == 1, err
    # nothing changed since, but the reload is still owed: still pending, still exit 1
    data = json.loads(ooma_moh(static, "sync", "--all", "--json", code=1)[0])
    assert (data["reload"], data["reloaded"], data["summary"]["unchanged"]) == ("pending", False, 1)
    # realtime: no reload is ever needed
    data = json.loads(ooma_moh(settings, "sync", "--all", "--json")[0])
    assert (data["reload"], data["summary"]["added"]) == ("not needed", 1)
    assert "reload: not needed" in ooma_moh(settings, "sync", "--all")[0]


# -- 5. serve ari with refused credentials -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["realtime"])
def test_serve_ari_says_credentials_are_refused(lab: LabAsterisk, lab_settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(lab_settings, ari_password="not-the-password")
    port = free_tcp_port()
    proc = served(
        settings,
        "serve",
        "ari",
        "--metrics-listen",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        port=port,
        directory=tmp_path,
    )
    try:
        status, reason = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and "not connected" in reason, reason
        time.sleep(7.0)  # the first attempt at once, the next max_backoff (5 s) later
        status, reason = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and "ARI credentials refused (Asterisk answered 401)" in reason, reason
        assert "OOMA_MOH_ARI_PASSWORD" in reason and "not-the-password" not in reason, reason
    finally:
        _, err = proc.terminate()
    entries = [json.loads(line) for line in err.splitlines()]
    refused = [e for e in entries if "ARI credentials refused" in e["message"]]
    # one per attempt, 5 s apart: not a burst, not silence
    assert len(refused) == 2, "\n".join(f"{e['time']} {e['level']} {e['message'][:150]}" for e in entries)
    for entry in refused:
        assert entry["level"] == "ERROR" and "answered 401" in entry["message"], entry
        assert "OOMA_MOH_ARI_USER" in entry["message"] and "OOMA_MOH_ARI_PASSWORD" in entry["message"], entry
        assert "not-the-password" not in entry["message"]
    assert not [e for e in entries if e["level"] == "WARNING" and "connection failed" in e["message"]], entries


# -- 6. a realtime database shared with others ---------------------------------------------------------
def rows(db_path: Path) -> dict[str, tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return {r[0]: tuple(r) for r in db.execute("SELECT * FROM musiconhold")}


def owned(db_path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return {name for (name,) in db.execute("SELECT name FROM ooma_moh_owned")}


@pytest.mark.parametrize("mode", ["realtime"])
def test_sync_all_keeps_rows_it_did_not_write(
    lab: LabAsterisk, lab_settings: Settings, lab_service: MohService, tmp_path: Path
) -> None:
    db_path = lab_settings.realtime_db
    # another application's classes in the same file, one with our prefix, playing the lab-talk tone
    foreign = {"tenant-foreign": str(lab.talk_moh), "other-app-hold": str(lab.talk_moh)}
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.executemany(
            "INSERT INTO musiconhold (name, mode, directory, sort, stamp) VALUES (?, 'files', ?, 'random', 7)",
            list(foreign.items()),
        )
    theirs = {name: row for name, row in rows(db_path).items() if name in foreign}
    try:
        upload(lab_service, "alpha", A, tmp_path)
        ooma_moh(lab_settings, "sync", "--all")
        lab_service.delete("alpha")
        data = json.loads(ooma_moh(lab_settings, "sync", "--all", "--json")[0])
        assert [(c["class"], c["change"]) for c in data["classes"]] == [("tenant-alpha", "removed")]
        after = rows(db_path)
        assert "tenant-alpha" not in after and {n: after.get(n) for n in foreign} == theirs
        assert owned(db_path) == set()
        windows = tones_heard(lab.record("foreign_kept", 2, "tenant-foreign"), [A])
        assert [w for w in windows[1:] if w is not None] and all(w == TALK_TONE for w in windows[1:] if w), windows

        # a tenant whose class name another application holds: refused, that row untouched
        upload(lab_service, "foreign", A, tmp_path)
        out, err = ooma_moh(lab_settings, "sync", "--all", code=1)
        assert "refused   tenant-foreign" in out and "did not write" in err and err.count("\n") == 1, (out, err)
        assert {n: rows(db_path).get(n) for n in foreign} == theirs and owned(db_path) == set()
        windows = tones_heard(lab.record("foreign_refused", 2, "tenant-foreign"), [A])
        assert all(w == TALK_TONE for w in windows[1:] if w), windows
    finally:
        with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
            db.executemany("DELETE FROM musiconhold WHERE name = ?", [(n,) for n in foreign])


def test_rows_of_an_earlier_ooma_moh_are_adopted(settings: Settings, service: MohService, tmp_path: Path) -> None:
    """A realtime database written before ownership was recorded: its rows under this home's
    moh_dir are ooma-moh's (changed, removed as the catalog says), the others are left alone."""
    upload(service, "alpha", A, tmp_path)
    db_path = settings.realtime_db
    db_path.parent.mkdir(parents=True, exist_ok=True)
    legacy = {
        "tenant-alpha": str(settings.moh_dir / "tenant-alpha" / "0123456789abcdef"),
        "tenant-gone": str(settings.moh_dir / "tenant-gone" / "fedcba9876543210"),
    }
    foreign = {"tenant-foreign": "/srv/other-app/moh/foreign", "other-app-hold": "/srv/other-app/moh/hold"}
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.execute(REALTIME_SCHEMA)
        db.executemany(
            "INSERT INTO musiconhold (name, mode, directory, sort, stamp) VALUES (?, 'files', ?, 'alpha', 1)",
            [*legacy.items(), *foreign.items()],
        )
    theirs = {name: row for name, row in rows(db_path).items() if name in foreign}

    data = json.loads(ooma_moh(settings, "sync", "--all", "--json")[0])
    assert sorted((c["class"], c["change"]) for c in data["classes"]) == [
        ("tenant-alpha", "changed"),
        ("tenant-gone", "removed"),
    ]
    after = rows(db_path)
    assert set(after) == {"tenant-alpha", *foreign}
    assert after["tenant-alpha"][2] == data["classes"][0]["directory"] != legacy["tenant-alpha"]
    assert {n: after[n] for n in foreign} == theirs
    assert owned(db_path) == {"tenant-alpha"}
    second = json.loads(ooma_moh(settings, "sync", "--all", "--json")[0])
    assert second["summary"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 1}
    assert rows(db_path) == after


# -- 7. the sample dialplan -----------------------------------------------------------------------------
@pytest.mark.parametrize("context", ["from-phones", "ooma-moh-transfer"])
def test_sample_dialplan_reaches_the_sample_endpoint(lab: LabAsterisk, context: str) -> None:
    """The lab loads ooma_moh/asterisk_conf/extensions.conf as shipped: a phone dialling the sample
    endpoint by name, or a transfer to it, finds an extension that dials it (`_X.` did not)."""
    for target in ("acme-100", "15551230100"):
        shown = lab.cli(f"dialplan show {target}@{context}")
        assert "Dial(PJSIP/${EXTEN},30" in shown, shown
