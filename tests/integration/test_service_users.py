"""Issue 13: Asterisk as its own unprivileged user, ooma-moh as another, on the lab Asterisk.

Asterisk runs as the chroot's Debian user ``asterisk`` (``asterisk -U asterisk -G asterisk``);
ooma-moh's commands and ``serve ari`` run as a uid of their own whose only group is Asterisk's
(``User=ooma-moh``, ``Group=asterisk``, ``UMask=0027`` of the units), without supplementary groups;
the classic ``ooma-moh-agi`` runs as Asterisk's uid, as Asterisk would exec it. The data home is
made by the repository's own tmpfiles.d rules (paths and users rewritten for the lab). In either
start order (Asterisk first: it opens the realtime database before ooma-moh ever wrote it; or
ooma-moh first), a tenant's upload and sync play on hold, the classic AGI resolves the tenant, and
a replacement uploaded after that plays too.

ooma-moh runs on Debian's /usr/bin/python3 (same 3.11 ABI) with this checkout and the venv's
site-packages on PYTHONPATH: the venv's own interpreter lives under /root, which other uids cannot
reach. Needs root (chown, setpriv); a missing tool fails the test.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ooma_moh.config import Settings, settings_environ
from ooma_moh.lab import LabAsterisk
from ooma_moh.lab.ari import AriHarness, Call
from tests.audio import tone
from tests.integration.conftest import reap, running_lab
from tests.integration.test_ari_hold import Handler, hold_once_and_check

REPO = Path(__file__).resolve().parents[2]
TMPFILES = REPO / "ooma_moh/deploy/systemd/ooma-moh.tmpfiles.conf"
OPERATOR_HOME = "/var/lib/ooma-moh"
A, B = 440.0, 660.0


@dataclass(frozen=True)
class Users:
    asterisk: int  # uid, and gid of group asterisk (Debian gives the user its own group)
    group: int
    ooma: int  # ooma-moh's uid: no passwd entry needed by anything it runs


def free_uid(*passwd_files: Path) -> int:
    taken = {
        int(line.split(":")[2]) for f in passwd_files for line in f.read_text().splitlines() if line.count(":") >= 6
    }
    return next(uid for uid in range(64100, 65000) if uid not in taken)


def python_as(uid: int, gid: int, umask: str) -> list[str]:
    """argv prefix: Debian's python3 as ``uid``:``gid`` with ``umask``, no other group."""
    for tool in ("setpriv", "/usr/bin/python3"):
        assert shutil.which(tool), f"needs {tool}"
    return [
        shutil.which("setpriv") or "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--",
        "/bin/sh",
        "-c",
        f'umask {umask}; exec /usr/bin/python3 "$@"',
        "python3",
    ]


def environ(settings: Settings, home: Path) -> dict[str, str]:
    return {
        **settings_environ(settings),
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}",
        "LANG": "C.UTF-8",
    }


def apply_tmpfiles(home: Path, users: Users, scratch: Path) -> None:
    """The repository's tmpfiles.d rules for the data home, with the lab's path and numeric users."""
    rules = [
        line.replace(OPERATOR_HOME, str(home))
        .replace(" ooma-moh ", f" {users.ooma} ")
        .replace(" asterisk ", f" {users.group} ")
        for line in TMPFILES.read_text().splitlines()
        if f" {OPERATOR_HOME}" in line and not line.startswith("#")
    ]
    assert len(rules) >= 3, rules  # the home, its realtime database, moh/
    conf = scratch / "lab-tmpfiles.conf"
    conf.write_text("\n".join(rules) + "\n")
    result = subprocess.run(
        [shutil.which("systemd-tmpfiles") or "systemd-tmpfiles", "--create", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr


class TwoUserLab:
    """The lab Asterisk as ``asterisk``, ooma-moh as its own uid, sharing one data home."""

    def __init__(self, scratch: Path, users: Users) -> None:
        self.scratch, self.users = scratch, users
        self.lab = LabAsterisk(scratch / "lab", run_as="asterisk")
        self.lab.home.mkdir(parents=True)
        (scratch / "lab").chmod(0o755)
        apply_tmpfiles(self.lab.home, users, scratch)
        self.settings = Settings(**self.lab.settings_overrides(), publish_mode="realtime", retain_old_s=0)
        self.ooma_home = scratch / "ooma-moh-user"  # $HOME of the service user
        self.ooma_home.mkdir()
        os.chown(self.ooma_home, users.ooma, users.group)
        self.env = environ(self.settings, self.ooma_home)
        self.ooma = python_as(users.ooma, users.group, "0027")

    def use_mode(self, mode: str) -> None:
        """Publish in ``mode`` (realtime or static: Asterisk then reads ooma-moh-classes.conf at
        the reload ``sync`` asks for over ARI)."""
        self.settings = dataclasses.replace(self.settings, publish_mode=mode)
        self.env = environ(self.settings, self.ooma_home)

    def ooma_moh(self, *args: str) -> str:
        """One ``ooma-moh`` command as the service user; its stdout (it must succeed)."""
        result = subprocess.run(
            [*self.ooma, "-m", "ooma_moh", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def upload(self, tenant: str, freq: float) -> None:
        source = tone(self.scratch / f"{tenant}-{int(freq)}.wav", freq, seconds=4)
        source.chmod(0o644)
        self.ooma_moh("upload", tenant, str(source), "--accept-disclaimer", "--by", "tester")
        self.ooma_moh("sync", "--all")

    def classic_agi(self, tenant: str) -> dict[str, str]:
        """``ooma-moh-agi TENANT`` as Asterisk's user, spoken to over pipes as Asterisk does; the
        variables it set."""
        proc = subprocess.Popen(
            [*python_as(self.users.asterisk, self.users.group, "0022"), "-m", "ooma_moh.agi.script", tenant],
            env={**self.env, "HOME": "/"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(f"agi_request: ooma-moh-agi\nagi_channel: PJSIP/acme-100-1\nagi_arg_1: {tenant}\n\n")
        proc.stdin.flush()
        values = {}
        while line := proc.stdout.readline():
            parts = line.split(None, 3)
            values[parts[2].strip('"')] = parts[3].strip().strip('"')
            proc.stdin.write("200 result=1\n")
            proc.stdin.flush()
        try:
            assert proc.wait(30) == 0, proc.stderr.read()
            assert "fallback" not in (err := proc.stderr.read()), err
        finally:
            reap(proc)
        return values

    def foreign_files(self) -> list[str]:
        """Files in the data home not the service user's, but for the realtime database's side
        files, which Asterisk may create (group-writable: checked by the next sync)."""
        found = []
        for directory, dirs, names in os.walk(self.lab.home):
            for name in [*dirs, *names]:
                path = Path(directory, name)
                side_file = name in ("realtime.sqlite3-wal", "realtime.sqlite3-shm")
                if path.lstat().st_uid != self.users.ooma and not side_file:
                    found.append(f"{path} uid {path.lstat().st_uid}")
        return found

    def hold(self, name: str, expected: float) -> None:
        """A caller of tenant acme held by its phone, with `serve ari` running as the service user."""
        harness = AriHarness(self.lab).start()
        handler = Handler(self.settings, self.lab, python=self.ooma, env=self.env, log=self.scratch / f"{name}-ari.log")
        handler.start()
        try:
            hold_once_and_check(Call(harness, self.lab, name, "acme", 6), expected)
        finally:
            handler.stop()
            harness.stop()
        assert "Traceback" not in handler.log.read_text(), handler.log.read_text()


@pytest.fixture
def two_users(lab_root: Path) -> Iterator[TwoUserLab]:
    """Root (the lab's users are switched with setpriv) and the lab's chroot."""
    scratch = Path(tempfile.mkdtemp(prefix="ooma-moh-users-"))  # not pytest's tmp_path: its parents are 0700
    scratch.chmod(0o755)
    probe = LabAsterisk(scratch / "probe")
    from ooma_moh.lab.provision import provision

    provision(probe.root)
    asterisk_uid, asterisk_gid = probe.user_ids("asterisk")
    users = Users(asterisk_uid, asterisk_gid, free_uid(Path("/etc/passwd"), probe.root / "etc/passwd"))
    try:
        yield TwoUserLab(scratch, users)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize(
    "order, mode", [("asterisk-first", "realtime"), ("ooma-moh-first", "realtime"), ("asterisk-first", "static")]
)
def test_asterisk_and_ooma_moh_as_two_users(two_users: TwoUserLab, order: str, mode: str) -> None:
    env = two_users
    env.use_mode(mode)
    if order == "ooma-moh-first":
        env.ooma_moh("init")
        env.upload("acme", A)
    with running_lab(env.lab) as lab:
        status = Path(f"/proc/{lab.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(env.users.asterisk)] * 4, status  # really not root (real, effective, saved, fs)
        if order == "asterisk-first" and mode == "realtime":
            assert (lab.home / "realtime.sqlite3").stat().st_size == 0  # Asterisk opened the empty file
            assert (lab.home / "realtime.sqlite3").stat().st_uid == env.users.ooma  # tmpfiles made it
        if order == "asterisk-first":
            env.ooma_moh("init")
            env.upload("acme", A)
        env.hold("users_a", A)
        assert env.classic_agi("acme") == {"CHANNEL(musicclass)": "tenant-acme", "OOMA_MOH_CLASS": "tenant-acme"}
        env.upload("acme", B)  # after Asterisk and the AGI have read everything: still writable
        env.hold("users_b", B)
    assert env.foreign_files() == []
