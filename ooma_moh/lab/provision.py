"""Provisioning the lab's chroot: a real Asterisk 22 from Debian's packages, built once and cached.

The chroot lives in ``OOMA_MOH_LAB_ROOT`` (default ``~/.cache/ooma-moh/lab-root``):
``debootstrap --variant=minbase sid`` from the Debian mirror this machine's apt already uses, then
``apt-get install asterisk asterisk-modules`` inside. About a minute and 700 MB. The build goes to
``<root>.partial`` and is renamed when complete, so an interrupted provisioning is simply redone;
processes that provision at the same moment (test workers) take turns on ``<root>.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..errors import AsteriskError


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (never hard-coded in the repository)."""
    files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if "security" not in uri:
                        return uri
            match = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
            if match and "security" not in match.group(1):
                return match.group(1)
    raise AsteriskError("no Debian mirror found in /etc/apt: cannot provision the lab Asterisk")


def default_root() -> Path:
    """Where the provisioned chroot is cached."""
    env = os.environ.get("OOMA_MOH_LAB_ROOT")
    return Path(env) if env else Path.home() / ".cache" / "ooma-moh" / "lab-root"


def run_step(argv: list[str], what: str, timeout: float = 900) -> str:
    """Run one provisioning or mount step; its stdout, or an :class:`AsteriskError` naming
    ``what`` failed with the last lines of its output."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AsteriskError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise AsteriskError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def is_mounted(path: Path) -> bool:
    """Whether something is mounted at ``path``."""
    target = str(path.resolve())
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def unmount(path: Path) -> None:
    """Unmount ``path`` if mounted; lazily when busy (a process still inside the chroot)."""
    unmounted = not is_mounted(path) or subprocess.run(["umount", str(path)], capture_output=True).returncode == 0
    if not unmounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def root_lock(root: Path, shared: bool = False) -> Iterator[None]:
    """Hold ``<root>.lock``: exclusively to build the chroot or to unmount its ``/proc``, shared
    while a lab Asterisk runs in it (so that another process never unmounts ``/proc`` under it)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


class RootProc:
    """The chroot's ``/proc``, shared by every lab Asterisk running in it, in this process or
    another: :meth:`enter` mounts it if needed and holds ``<root>.lock`` shared; :meth:`leave`
    unmounts it only when no other lab holds the lock any more."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock: IO[str] | None = None

    def enter(self) -> None:
        """Hold the lock shared, then make sure ``/proc`` is mounted."""
        if self._lock is not None:
            return
        self._lock = open(self.root.with_name(self.root.name + ".lock"), "a")  # noqa: SIM115 - held while the lab runs
        fcntl.flock(self._lock, fcntl.LOCK_SH)  # waits while a leaving lab unmounts /proc
        target = self.root / "proc"
        target.mkdir(exist_ok=True)
        if not is_mounted(target):
            run_step(["mount", "-t", "proc", "proc", str(target)], f"mount {target}", timeout=30)

    def leave(self) -> None:
        """Unmount ``/proc`` if this is the last lab using it; release the lock."""
        if self._lock is None:
            return
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another lab still runs in the chroot: it keeps /proc
        else:
            unmount(self.root / "proc")
        finally:
            self._lock.close()
            self._lock = None


def provision(root: Path | None = None, log: Callable[[str], object] = print) -> Path:
    """Build the chroot with Asterisk if it is not cached yet; return its path."""
    root = root or default_root()
    if (root / "usr/sbin/asterisk").exists():
        return root
    if os.geteuid() != 0:
        raise AsteriskError("the lab Asterisk needs root (debootstrap, chroot, mount)")
    with root_lock(root):
        if not (root / "usr/sbin/asterisk").exists():  # another process may have built it meanwhile
            _build(root, log)
    return root


def _build(root: Path, log: Callable[[str], object]) -> None:
    """debootstrap and apt-get into ``<root>.partial``, then rename it ``root``."""
    if shutil.which("debootstrap") is None:
        raise AsteriskError("debootstrap is not installed: run scripts/bootstrap")
    partial = root.with_name(root.name + ".partial")
    unmount(partial / "proc")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    log(f"lab: debootstrap sid into {partial} (about a minute)")
    run_step(["debootstrap", "--variant=minbase", "sid", str(partial), mirror], "debootstrap")
    subprocess.run(["mount", "-t", "proc", "proc", str(partial / "proc")], check=True)
    try:
        log("lab: apt-get install asterisk asterisk-modules")
        env = "DEBIAN_FRONTEND=noninteractive"
        run_step(
            [
                "chroot",
                str(partial),
                "sh",
                "-c",
                "apt-get -q -o Acquire::Check-Valid-Until=false update && "
                f"{env} apt-get install -y -q --no-install-recommends asterisk asterisk-modules && apt-get clean",
            ],
            "apt-get install asterisk",
        )
    finally:
        unmount(partial / "proc")
    os.rename(partial, root)
