"""ooma_moh/deploy/systemd: the units, sysusers.d and tmpfiles.d files, checked by systemd's own tools.

- ``systemd-analyze verify`` on each unit (unknown keys, bad values, an ``ExecStart`` that is not
  executable). The units name ``/usr/local/bin/ooma-moh``; the test verifies copies that name this
  venv's console script instead, so "not executable" is a real finding. ``verify`` (systemd 252)
  does not resolve ``User=``/``Group=`` — the manager does that when it starts the process — so
  the users are checked where they come from: ``systemd-sysusers --root`` applies our sysusers.d
  file to a scratch root holding Debian's ``asterisk`` user, and ``systemd-tmpfiles --root`` then
  creates our directories there, resolving owners against that root's ``/etc/passwd``.
- ``systemd-analyze security --offline``: the sandbox's exposure stays in the "OK" band.
- The properties the deployment relies on, parsed from the files, and the ``ExecStart`` command
  lines accepted by the real CLI; each unit's own metrics port, which the shared environment
  file cannot override; the environment file read alike by systemd's own parser and by a shell.
- ``SystemCallFilter=`` allows every system call a real upload (ffmpeg under prlimit/setpriv), a
  sync, and ``serve http``/``serve agi`` make, as recorded by ``strace -f``.
- The permissions: as the ``ooma-moh`` uid (group ``asterisk``, ``UMask=0027``) the real realtime
  publisher writes the database Asterisk reads; as the ``asterisk`` uid, it is read.

Needs root (chown, setuid) and systemd's tools; a missing tool fails the test, it is not skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ooma_moh.config import Settings, load_settings
from ooma_moh.http.guard import Limits
from tests.integration.conftest import reap

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "ooma_moh" / "deploy" / "systemd"
UNITS = {  # unit -> the ooma-moh arguments of its ExecStart
    "ooma-moh-ari.service": ["serve", "ari"],
    "ooma-moh-agi.service": ["serve", "agi"],
    "ooma-moh-http.service": ["serve", "http"],
    "ooma-moh-agent.service": ["agent"],
}
ON_ASTERISK = {"ooma-moh-ari.service", "ooma-moh-agi.service", "ooma-moh-agent.service"}
WRITERS = {"ooma-moh-http.service", "ooma-moh-agent.service", "ooma-moh-ari.service"}  # agi only reads
RUNS_FFMPEG = {"ooma-moh-http.service"}
#: unit -> its own metrics address (docs/monitoring.md): one shared env file, four listeners
METRICS = {
    "ooma-moh-ari.service": "127.0.0.1:9481",
    "ooma-moh-agi.service": "127.0.0.1:9482",
    "ooma-moh-http.service": "127.0.0.1:9483",
    "ooma-moh-agent.service": "127.0.0.1:9484",
}
ENV_EXAMPLE = DEPLOY / "ooma-moh.env.example"
#: systemd's generator for environment.d files, which it parses with the parser of EnvironmentFile=
ENV_GENERATOR = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"
INSTALLED_BIN = "/usr/local/bin/ooma-moh"
DATA_HOME = "/var/lib/ooma-moh"
#: Debian's asterisk package creates these (adduser --system); sysusers must add to them, not replace.
DEBIAN_PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\nasterisk:x:120:125:Asterisk PBX daemon:/var/lib/asterisk:/usr/sbin/nologin\n"
)
DEBIAN_GROUP = "root:x:0:\nasterisk:x:125:\n"
#: Always allowed by systemd's seccomp filter, whatever SystemCallFilter= says (systemd.exec(5)).
IMPLICIT_SYSCALLS = {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: these checks need it (Debian: apt-get install "
            f"{'strace' if name == 'strace' else 'systemd'})"
        )
    return path


def run(
    argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env)


def venv_console_script() -> Path:
    script = Path(sys.executable).parent / "ooma-moh"
    assert os.access(script, os.X_OK), f"no ooma-moh console script next to {sys.executable}"
    return script


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order; systemd allows a key more than once."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        assert current is not None and "=" in line, f"{path.name}: {raw!r}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= set {len(found)} times"
    return found[0]


def words(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> set[str]:
    return {word for value in values(unit, section, key) for word in value.split()}


@pytest.fixture
def units_dir(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this venv's ooma-moh, plus the drop-in on one of them."""
    script = venv_console_script()
    target = tmp_path / "units"
    target.mkdir()
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        assert text.count(f"ExecStart={INSTALLED_BIN} ") == 1, name
        (target / name).write_text(text.replace(f"ExecStart={INSTALLED_BIN} ", f"ExecStart={script} "))
    dropins = target / "ooma-moh-http.service.d"
    dropins.mkdir()
    shutil.copy(DEPLOY / "dropins" / "local-postgresql.conf", dropins)
    return target


def about(stderr: str, names: list[str]) -> list[str]:
    """verify's lines about our files (it may also report on the host's own units)."""
    return [line for line in stderr.splitlines() if any(name in line for name in names) or "ooma-moh" in line]


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_verify(unit: str, units_dir: Path) -> None:
    result = run([tool("systemd-analyze"), "verify", str(units_dir / unit)], cwd=units_dir)
    assert result.returncode == 0, result.stderr
    assert about(result.stderr, [unit, str(units_dir)]) == [], result.stderr


def test_verify_would_catch_our_mistakes(units_dir: Path) -> None:
    """The check above is not vacuous: an unknown key, a bad value, a missing binary are reported."""
    unit = units_dir / "ooma-moh-ari.service"
    text = unit.read_text()
    unit.write_text(text.replace("WatchdogSec=30", "WatchdogSec=30\nWatchdogSecs=30\nProtectSystem=very"))
    result = run([tool("systemd-analyze"), "verify", str(unit)], cwd=units_dir)
    assert "Unknown key 'WatchdogSecs'" in result.stderr, result.stderr
    assert "ignoring: very" in result.stderr, result.stderr  # a warning only: verify still exits 0
    unit.write_text(text.replace(str(venv_console_script()), INSTALLED_BIN + "-missing"))
    result = run([tool("systemd-analyze"), "verify", str(unit)], cwd=units_dir)
    assert result.returncode != 0 and "is not executable" in result.stderr, result.stderr


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_sandbox_exposure_is_low(unit: str, units_dir: Path) -> None:
    """``systemd-analyze security``'s score, 0-10, stays at most 2.0 (its "OK" band)."""
    result = run(
        [tool("systemd-analyze"), "security", "--offline=true", "--threshold=20", "--no-pager", str(units_dir / unit)],
        cwd=units_dir,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_properties(unit: str) -> None:
    parsed = parse_unit(DEPLOY / unit)
    service = "Service"
    assert one(parsed, service, "Type") == "notify"
    assert one(parsed, service, "NotifyAccess") == "main"
    assert one(parsed, service, "WatchdogSec") == "30"
    assert one(parsed, service, "Restart") == "on-failure"
    # A catalog (PostgreSQL) down for minutes at boot: the process exits 1 at each start, and is
    # restarted at a calm pace forever. The start limit is never reached: at RestartSec= apart,
    # fewer than StartLimitBurst= starts fit in StartLimitIntervalSec= (systemd 252 has no
    # RestartSteps=, so the pace is constant).
    restart_s = float(one(parsed, service, "RestartSec"))
    interval_s = float(one(parsed, "Unit", "StartLimitIntervalSec"))
    burst = int(one(parsed, "Unit", "StartLimitBurst"))
    assert restart_s >= 5, "a calm pace: no tight loop against a catalog that is down"
    assert interval_s // restart_s + 1 < burst, (restart_s, interval_s, burst)
    assert (restart_s, interval_s, burst) == (10.0, 60.0, 10)  # what docs/operations.md says
    assert one(parsed, service, "ExecStart").split() == [INSTALLED_BIN, *UNITS[unit]]
    user, group = one(parsed, service, "User"), one(parsed, service, "Group")
    assert (user, group) == ("ooma-moh", "asterisk") and user not in ("root", "0")
    assert one(parsed, service, "UMask") == "0027"
    assert one(parsed, service, "EnvironmentFile") == "-/etc/ooma-moh/ooma-moh.env"
    assert f"OOMA_MOH_HOME={DATA_HOME}" in words(parsed, service, "Environment")
    assert f"OOMA_MOH_METRICS_LISTEN={METRICS[unit]}" in words(parsed, service, "Environment")
    assert one(parsed, service, "KillSignal") == "SIGTERM"
    assert float(one(parsed, service, "TimeoutStopSec")) >= 30
    assert "143" in words(parsed, service, "SuccessExitStatus")  # SIGTERM during start-up (docs/cli.md)
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"):
        assert one(parsed, service, key) == "yes", key
    assert one(parsed, service, "ProtectSystem") == "strict"
    assert values(parsed, service, "ReadWritePaths") == ([DATA_HOME] if unit in WRITERS else [])
    assert one(parsed, service, "CapabilityBoundingSet") == ""
    if unit == "ooma-moh-http.service":  # sized from the connection caps (http/guard.py)
        assert int(one(parsed, service, "LimitNOFILE")) >= Limits.of(Settings()).descriptors()
    # a sandbox inherited by ffmpeg must not refuse what ffmpeg's libraries may do
    mdwe = values(parsed, service, "MemoryDenyWriteExecute")
    assert mdwe == ([] if unit in RUNS_FFMPEG else ["yes"])
    assert "network-online.target" in words(parsed, "Unit", "After") & words(parsed, "Unit", "Wants")
    assert "postgresql.service" in words(parsed, "Unit", "After")  # ordering only: no-op without it
    if unit in ON_ASTERISK:
        assert "asterisk.service" in words(parsed, "Unit", "After") & words(parsed, "Unit", "Wants")
    assert one(parsed, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_exec_start_is_a_valid_command_line(unit: str) -> None:
    """The real CLI accepts the unit's arguments (an unknown option would exit 2)."""
    argv = one(parse_unit(DEPLOY / unit), "Service", "ExecStart").split()[1:]
    result = run([str(venv_console_script()), *argv, "--help"])
    assert result.returncode == 0, result.stderr


def test_postgresql_dropin() -> None:
    parsed = parse_unit(DEPLOY / "dropins" / "local-postgresql.conf")
    assert set(parsed) == {"Unit"}
    assert words(parsed, "Unit", "Wants") == words(parsed, "Unit", "After") == {"postgresql.service"}


def example_assignments() -> dict[str, str]:
    """Every ``VAR=value`` line of the env example, commented out or not, as written (quotes kept)."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def test_env_example_names_real_settings() -> None:
    """Every OOMA_MOH_* line of the example, commented out or not, is a setting with a valid value,
    and each value is one word to a shell too: a value with a space unquoted would run the rest
    as a command in the fallback that sources the file (docs/operations.md)."""
    fields = {name.upper() for name in Settings.__dataclass_fields__}
    environ: dict[str, str] = {}
    for name, raw in example_assignments().items():
        value = shlex.split(raw, comments=False)
        assert len(value) == 1, f"{name}={raw}: {len(value)} words to a shell: quote it"
        if name.startswith("OOMA_MOH_"):
            assert name.removeprefix("OOMA_MOH_") in fields, name
            environ[name] = value[0]
    assert environ["OOMA_MOH_HOME"] == DATA_HOME
    settings = load_settings(None, environ=environ)
    assert settings.home == Path(DATA_HOME)
    assert settings.asterisk_cli_argv == ["asterisk", "-rx"]  # quoted in the file, split by ooma-moh
    assert settings.database_url.endswith("?sslmode=verify-full&sslrootcert=/etc/ssl/ooma-moh/postgresql-ca.crt")


def test_each_unit_has_its_own_metrics_port_whatever_the_env_file_says() -> None:
    """One env file per host for every unit: each unit sets its own metrics port, and the example
    does not set one (a variable from EnvironmentFile= overrides Environment=, systemd.exec(5),
    so one there would give all four the same address: "address already in use")."""
    assert "OOMA_MOH_METRICS_LISTEN" not in example_assignments()
    assert "OOMA_MOH_METRICS_LISTEN" not in re.sub(r"(?m)^#.*$", "", ENV_EXAMPLE.read_text())
    from_file = {k: shlex.split(v)[0] for k, v in example_assignments().items() if k.startswith("OOMA_MOH_")}
    addresses: dict[str, tuple[str, int] | None] = {}
    for unit in UNITS:
        own = dict(word.split("=", 1) for word in words(parse_unit(DEPLOY / unit), "Service", "Environment"))
        addresses[unit] = load_settings(None, environ=own | from_file).metrics_address  # the file wins, as in systemd
    assert addresses == {unit: ("127.0.0.1", int(address.rsplit(":")[1])) for unit, address in METRICS.items()}
    assert sorted(address[1] for address in addresses.values() if address) == [9481, 9482, 9483, 9484]
    table = (REPO / "docs" / "monitoring.md").read_text()
    for unit, address in METRICS.items():  # the table operators read says the same
        assert re.search(rf"\| `{unit.removesuffix('.service')}` \| `{address}` \|", table), unit


def test_systemd_and_a_shell_read_the_env_example_alike(tmp_path: Path) -> None:
    """The example, every line uncommented, read by systemd's own parser of environment files (the
    environment.d generator shares it with EnvironmentFile=, then expands $VAR: the example has
    none) and by ``sh`` sourcing it, as docs/operations.md's fallback does: the same values."""
    text = re.sub(r"(?m)^#([A-Z][A-Z0-9_]*=)", r"\1", ENV_EXAMPLE.read_text())
    assert "$" not in "".join(line for line in text.splitlines() if not line.startswith("#"))
    config = tmp_path / "config" / "environment.d"
    config.mkdir(parents=True)
    (config / "50-ooma-moh.conf").write_text(text)
    assert os.access(ENV_GENERATOR, os.X_OK), f"{ENV_GENERATOR} is missing (Debian: apt-get install systemd)"
    generated = run([ENV_GENERATOR], env={"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)})
    assert generated.returncode == 0, generated.stderr
    by_systemd = {}
    for line in generated.stdout.splitlines():  # it prints NAME=value, shell-quoted when needed
        name, _, value = line.partition("=")
        by_systemd[name] = shlex.split(value)[0] if value else ""
    (tmp_path / "ooma-moh.env").write_text(text)
    sourced = run(["/bin/sh", "-c", f'set -a; . "{tmp_path / "ooma-moh.env"}"; exec env -0'], env={})
    assert sourced.returncode == 0, sourced.stderr
    by_shell = dict(item.split("=", 1) for item in sourced.stdout.split("\0") if item)
    names = set(example_assignments())
    assert names and {n: by_systemd.get(n) for n in names} == {n: by_shell.get(n) for n in names}
    assert by_systemd["OOMA_MOH_ASTERISK_CLI"] == "asterisk -rx"
    assert by_systemd["OOMA_MOH_ARI_PASSWORD"] == "CHANGE_ME"


# --- users and directories, in a scratch root --------------------------------------------------


def ids(root: Path) -> dict[str, int]:
    """User name -> uid, and "group:" + group name -> gid, from a root's /etc/passwd and /etc/group."""
    out: dict[str, int] = {}
    for line in (root / "etc/passwd").read_text().splitlines():
        name, _, uid, *_ = line.split(":")
        out[name] = int(uid)
    for line in (root / "etc/group").read_text().splitlines():
        name, _, gid, _members = line.split(":")
        out["group:" + name] = int(gid)
    return out


def members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, listed = line.split(":")
        if name == group:
            return [m for m in listed.split(",") if m]
    raise AssertionError(f"no group {group}")


@pytest.fixture
def system_root(root: None) -> Iterator[Path]:
    """A scratch root: Debian's asterisk user, then our sysusers.d and tmpfiles.d files applied.
    Not under pytest's tmp_path: its parents are 0700, and the service uids must reach the root.
    Needs root: systemd-tmpfiles chowns to the service user."""
    scratch = Path(tempfile.mkdtemp(prefix="ooma-moh-units-"))
    scratch.chmod(0o755)
    try:
        yield _apply_system_files(scratch / "root")
    finally:
        shutil.rmtree(scratch)


def _apply_system_files(root: Path) -> Path:
    for directory in (root, root / "etc", root / "var", root / "var/lib"):
        directory.mkdir()
        directory.chmod(0o755)
    (root / "etc/passwd").write_text(DEBIAN_PASSWD)
    (root / "etc/group").write_text(DEBIAN_GROUP)
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nasterisk:!:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nasterisk:!::\n")
    result = run([tool("systemd-sysusers"), f"--root={root}", str(DEPLOY / "ooma-moh.sysusers.conf")])
    assert result.returncode == 0, result.stderr
    result = run([tool("systemd-tmpfiles"), f"--root={root}", "--create", str(DEPLOY / "ooma-moh.tmpfiles.conf")])
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return root


def test_sysusers_adds_ooma_moh_to_asterisk(system_root: Path) -> None:
    known = ids(system_root)
    assert known["asterisk"] == 120 and known["group:asterisk"] == 125  # Debian's, untouched
    assert 0 < known["ooma-moh"] < 1000 and known["group:ooma-moh"] < 1000  # a system user
    assert members(system_root, "asterisk") == ["ooma-moh"]
    entry = next(line for line in (system_root / "etc/passwd").read_text().splitlines() if line.startswith("ooma-moh:"))
    assert entry.endswith(":/:/usr/sbin/nologin"), entry  # no login; home / (not a second data home)
    for unit in UNITS:  # every User=/Group= of the units exists after sysusers
        parsed = parse_unit(DEPLOY / unit)
        assert one(parsed, "Service", "User") in known
        assert "group:" + one(parsed, "Service", "Group") in known


def test_tmpfiles_creates_what_the_units_need(system_root: Path) -> None:
    known = ids(system_root)
    expect = {  # path -> (mode, owner, group)
        DATA_HOME: (0o2770, known["ooma-moh"], known["group:asterisk"]),
        DATA_HOME + "/moh": (0o2750, known["ooma-moh"], known["group:asterisk"]),
        # created empty, ooma-moh's: Asterisk starting first must not create it as its own
        DATA_HOME + "/realtime.sqlite3": (0o664, known["ooma-moh"], known["group:asterisk"]),
        "/etc/ooma-moh": (0o750, 0, known["group:ooma-moh"]),
    }
    for path, (mode, uid, gid) in expect.items():
        st = (system_root / path.lstrip("/")).stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, uid, gid), path
    for unit in UNITS:  # a ReadWritePaths= that does not exist fails the start (226/NAMESPACE)
        for path in values(parse_unit(DEPLOY / unit), "Service", "ReadWritePaths"):
            assert (system_root / path.lstrip("/")).is_dir(), (unit, path)


def as_user(uid: int, gid: int, code: str, *, umask: str) -> subprocess.Popen[str]:
    """``code`` run by /usr/bin/python3 (any uid may run it, unlike a venv's interpreter under /root)
    as uid:gid with ``umask``, as the unit's User=/Group=/UMask= do (without the supplementary
    groups systemd adds: the access must not depend on them)."""
    return subprocess.Popen(
        [
            tool("setpriv"),
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
            "/bin/sh",
            "-c",
            f'umask {umask}; exec /usr/bin/python3 -c "$0"',
            code,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PYTHONPATH": str(REPO)},
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


PUBLISH = """
import sys; from pathlib import Path; from ooma_moh.publish import RealtimePublisher
RealtimePublisher(Path(sys.argv[1]), "tenant-").apply({"tenant-acme": sys.argv[2]}, set())
"""
#: What Asterisk's res_config_sqlite3 does: opens the file (read-write if it may) and keeps it open,
#: reading the row at each hold; here one read per line on stdin, until EOF.
ASTERISK_READS = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for _ in sys.stdin:
    print(db.execute("SELECT directory FROM musiconhold WHERE name = 'tenant-acme'").fetchone()[0], flush=True)
"""


def asterisk_reader(db: Path, uid: int, gid: int) -> subprocess.Popen[str]:
    """Asterisk: its own user and group, no other group."""
    return subprocess.Popen(
        [
            tool("setpriv"),
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            ASTERISK_READS,
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def ask(reader: subprocess.Popen[str]) -> str:
    assert reader.stdin is not None and reader.stdout is not None
    reader.stdin.write("\n")
    reader.stdin.flush()
    return reader.stdout.readline().strip()  # the pipe's EOF ends a wait if the reader died


def publish_args(code: str, *args: str) -> str:
    return f"import sys; sys.argv = ['x', {', '.join(repr(a) for a in args)}]\n" + code


@pytest.fixture
def realtime(system_root: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    known = ids(system_root)
    assert Path("/usr/bin/python3").exists(), "needs Debian's python3 (any uid may run it)"
    yield system_root / DATA_HOME.lstrip("/") / "realtime.sqlite3", known


def test_asterisk_reads_what_ooma_moh_publishes(realtime: tuple[Path, dict[str, int]]) -> None:
    db, known = realtime
    ooma, asterisk, group = known["ooma-moh"], known["asterisk"], known["group:asterisk"]
    finish(as_user(ooma, group, publish_args(PUBLISH, str(db), "/v1"), umask="0027"))
    assert db.stat().st_gid == group  # the setgid data home
    reader = asterisk_reader(db, asterisk, group)
    try:
        assert ask(reader) == "/v1"
    finally:
        reader.kill()
        reap(reader)


def test_ooma_moh_republishes_while_asterisk_holds_the_database(realtime: tuple[Path, dict[str, int]]) -> None:
    db, known = realtime
    ooma, asterisk, group = known["ooma-moh"], known["asterisk"], known["group:asterisk"]
    finish(as_user(ooma, group, publish_args(PUBLISH, str(db), "/v1"), umask="0027"))
    reader = asterisk_reader(db, asterisk, group)
    try:
        assert ask(reader) == "/v1"  # Asterisk now holds it open: the -wal/-shm files are its
        again = as_user(ooma, group, publish_args(PUBLISH, str(db), "/v2"), umask="0027")
        out, _ = again.communicate(timeout=60)
        assert again.returncode == 0, out
        assert ask(reader) == "/v2"
    finally:
        reader.kill()
        reap(reader)


CREATE_CATALOG = """
import sys; from pathlib import Path; from ooma_moh.storage.sqlite import SqliteCatalog
SqliteCatalog(Path(sys.argv[1])).close()
"""


def test_a_catalog_ooma_moh_creates_is_not_world_readable(system_root: Path) -> None:
    """`runuser -u ooma-moh -- ooma-moh init` run by root keeps root's umask 022: the catalog, which
    holds CSRF values and token hashes, is still 0640 (group asterisk: the classic AGI reads it)."""
    known = ids(system_root)
    catalog = system_root / DATA_HOME.lstrip("/") / "catalog.sqlite3"
    finish(
        as_user(known["ooma-moh"], known["group:ooma-moh"], publish_args(CREATE_CATALOG, str(catalog)), umask="0022")
    )
    st = catalog.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, known["ooma-moh"], known["group:asterisk"])
    catalog.chmod(0o660)  # an operator's choice on an existing catalog is left alone
    finish(
        as_user(known["ooma-moh"], known["group:ooma-moh"], publish_args(CREATE_CATALOG, str(catalog)), umask="0022")
    )
    assert catalog.stat().st_mode & 0o7777 == 0o660


SIDE_FILE_MODES = """
import stat, sys; from pathlib import Path; from ooma_moh.publish import RealtimePublisher
db = Path(sys.argv[1])
with RealtimePublisher(db, "tenant-")._connect():  # while open, as Asterisk may find it
    print(" ".join(oct(stat.S_IMODE(Path(str(db) + side).stat().st_mode)) for side in ("", "-wal", "-shm")))
"""


def test_the_realtime_side_files_are_group_writable_from_the_start(system_root: Path) -> None:
    """A realtime database ooma-moh creates itself (no tmpfiles.d): the -wal and -shm files its
    first connection creates get the database's mode, so they must be 0664 already then — Asterisk
    opening the database meanwhile must be able to write them."""
    known = ids(system_root)
    db = system_root / DATA_HOME.lstrip("/") / "new-realtime.sqlite3"
    out = finish(
        as_user(known["ooma-moh"], known["group:asterisk"], publish_args(SIDE_FILE_MODES, str(db)), umask="0027")
    )
    assert out.split() == ["0o664", "0o664", "0o664"], out


# --- the system call filter against what the processes really call -----------------------------


def expand(name: str, cache: dict[str, set[str]]) -> set[str]:
    """A SystemCallFilter= entry as system call names (groups expanded by systemd-analyze)."""
    if not name.startswith("@"):
        return {name}
    if name not in cache:
        listing = run([tool("systemd-analyze"), "syscall-filter", "--no-pager", name])
        assert listing.returncode == 0, listing.stderr
        found: set[str] = set()
        for line in listing.stdout.splitlines()[1:]:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                found |= expand(entry, cache)
        cache[name] = found
    return cache[name]


def allowed_syscalls(unit: str) -> set[str]:
    cache: dict[str, set[str]] = {}
    allow: set[str] | None = None
    deny: set[str] = set()
    for value in values(parse_unit(DEPLOY / unit), "Service", "SystemCallFilter"):
        if value.startswith("~"):
            deny |= {s for entry in value[1:].split() for s in expand(entry, cache)}
        else:
            names = {s for entry in value.split() for s in expand(entry, cache)}
            allow = names if allow is None else allow | names
    assert allow, f"{unit}: no SystemCallFilter= allow list"
    return (allow - deny) | IMPLICIT_SYSCALLS


def traced(summary: Path) -> set[str]:
    """System call names of an ``strace -c`` summary."""
    names = set()
    for line in summary.read_text().splitlines():
        parts = line.split()
        if parts and re.fullmatch(r"\d+\.\d+", parts[0]) and parts[-1] != "total":
            names.add(parts[-1])
    return names


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OOMA_MOH_", "AWS_"))}
    env["OOMA_MOH_HOME"] = str(home)
    return env


def serve_and_stop(argv: list[str], summary: Path, env: dict[str, str], probe: str) -> None:
    """Run a ``serve`` command under strace until it listens, probe it once, SIGTERM it."""
    proc = subprocess.Popen(
        [tool("strace"), "-f", "-qq", "-c", "-o", str(summary), "--", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"{argv} exited before listening"
            match = re.search(r"listening on [\d.]+:(\d+)", line)
            port = int(match[1]) if match else None
        assert port, f"{argv} did not say where it listens"
        if probe == "http":
            with contextlib.suppress(urllib.error.HTTPError):  # any answer: the request went through the server
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        else:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"agi_network: yes\nagi_network_script: moh\nagi_channel: PJSIP/acme-1\n\n")
                conn.recv(4096)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "strace has no child"
        os.kill(int(children[0]), signal.SIGTERM)
        proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        reap(proc)


def test_syscall_filter_allows_upload_sync_and_serving(tmp_path: Path) -> None:
    """Every system call made by ooma-moh and its ffmpeg (under prlimit and setpriv) while it
    converts an upload, publishes it, and serves HTTP and FastAGI is one the units allow."""
    script = str(venv_console_script())
    home = tmp_path / "home"
    env = clean_env(home)
    sample = tmp_path / "hold.wav"
    made = run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=440:d=3", str(sample)])
    assert made.returncode == 0, made.stderr
    strace = tool("strace")
    summaries = []
    for n, args in enumerate(
        [["upload", "acme", str(sample), "--accept-disclaimer", "--by", "test"], ["sync", "--all"]]
    ):
        summaries.append(tmp_path / f"cli-{n}.txt")
        result = run([strace, "-f", "-qq", "-c", "-o", str(summaries[-1]), "--", script, *args], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    summaries.append(tmp_path / "http.txt")
    serve_and_stop([script, "serve", "http", "--listen", "127.0.0.1:0"], summaries[-1], env, "http")
    summaries.append(tmp_path / "agi.txt")
    serve_and_stop([script, "serve", "agi", "--listen", "127.0.0.1:0"], summaries[-1], env, "agi")

    used = set().union(*(traced(s) for s in summaries))
    assert {"capset", "prlimit64", "prctl", "execve"} <= used  # setpriv/prlimit ran: the trace saw ffmpeg's path
    for unit in ("ooma-moh-http.service", "ooma-moh-agi.service"):
        assert used - allowed_syscalls(unit) == set(), unit
    # the filter is the same on every unit; ari and agent (no Asterisk, no PostgreSQL here) rely on it
    assert len({frozenset(allowed_syscalls(unit)) for unit in UNITS}) == 1
