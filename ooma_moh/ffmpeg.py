"""Running ffmpeg on untrusted input: resource limits, a deadline, and death with the parent.

Every ffmpeg child gets, before ffmpeg itself starts:

- ``RLIMIT_CPU`` (soft ``cpu_s``; the kernel sends SIGXCPU, then SIGKILL one second later) and
  ``RLIMIT_AS`` (``memory_bytes`` of address space; allocations beyond fail and ffmpeg exits),
  so a pathological file costs at most that much;
- ``PR_SET_PDEATHSIG`` = SIGKILL, so a ``kill -9`` of ooma-moh takes its ffmpeg with it instead
  of leaving it running for minutes;
- its own process group, so the whole group is killed on a timeout.

The limits and the death signal are set by util-linux's ``prlimit`` and ``setpriv`` (Debian:
essential), which then exec ffmpeg in the same process: no Python code runs between fork and exec
(``preexec_fn`` is unsafe in a threaded server), and nothing runs unlimited even for a moment.
Without them (another system), a ``preexec_fn`` does the same.

Its log is read as it is written (``-loglevel level+info`` lines on stderr), and a caller may stop
the run as soon as a line shows the input is unacceptable (see ``watch``): the input's stream
description is printed before decoding starts, so a refused input is never decoded.

The exit code alone proves nothing (ffmpeg 5.1 exits 0 after "Error writing trailer … No space
left on device"); :func:`storage_failure` finds such lines and callers verify what was written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
PRLIMIT, SETPRIV = shutil.which("prlimit"), shutil.which("setpriv")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_PRCTL = _LIBC.prctl
MAX_LOG_BYTES = 4 << 20  # a damaged file can make ffmpeg warn at every frame: keep the head

#: Log fragments of errors that are the server's problem, not the file's.
STORAGE_ERRNOS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Permission denied": errno.EACCES,
    "Read-only file system": errno.EROFS,
    "Input/output error": errno.EIO,
}


@dataclass(frozen=True)
class Limits:
    """What one ffmpeg run may cost."""

    cpu_s: float = 60.0
    wall_s: float = 120.0
    memory_bytes: int = 1 << 30

    @property
    def cpu_seconds(self) -> int:
        """``RLIMIT_CPU`` counts whole seconds, at least one."""
        return max(1, int(self.cpu_s))


@dataclass(frozen=True)
class Run:
    """The outcome of one ffmpeg run. ``stopped`` is set when ``watch`` or a limit ended it."""

    returncode: int
    log: str
    stopped: str | None = None

    @property
    def killed_by_limit(self) -> bool:
        """Whether the CPU or memory limit, or the deadline, ended the run."""
        if self.stopped == "deadline":
            return True
        if self.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            return True
        # ffmpeg catches SIGXCPU and exits "normally" (255) after saying so
        return (
            f"received signal {int(signal.SIGXCPU)}" in self.log
            or "Cannot allocate memory" in self.log
            or "ENOMEM" in self.log
        )

    @property
    def could_not_start(self) -> bool:
        """ffmpeg could not even load (its libraries need more address space than allowed)."""
        return "error while loading shared libraries" in self.log

    def errors(self) -> list[str]:
        """The log's error lines (``[error]`` / ``[fatal]``)."""
        return [line for line in self.log.splitlines() if "[error]" in line or "[fatal]" in line]


class ToolMissing(Exception):
    """The ffmpeg binary is not installed (or not executable)."""


def _child_setup(limits: Limits, parent: int) -> Callable[[], None]:
    cpu = limits.cpu_seconds

    def setup() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def _limited(argv: list[str], limits: Limits) -> list[str]:
    """``argv`` run under ``prlimit`` and ``setpriv`` (see the module docstring), if present."""
    if not (PRLIMIT and SETPRIV):
        return argv
    cpu = limits.cpu_seconds
    if shutil.which(argv[0]) is None:
        raise ToolMissing(f"{argv[0]}: not found")
    return [
        PRLIMIT,
        f"--cpu={cpu}:{cpu + 1}",
        f"--as={limits.memory_bytes}:{limits.memory_bytes}",
        "--",
        SETPRIV,
        "--pdeathsig",
        "KILL",
        "--",
        *argv,
    ]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _watch_lines(watch: Callable[[str], str | None], data: bytes) -> tuple[bytes, str | None]:
    """Show ``watch`` each complete line of ``data``; (the incomplete rest, why to stop or None)."""
    *lines, pending = data.split(b"\n")
    pending = pending[-65536:]  # ffmpeg ends its lines; never grow without bound
    for line in lines:
        if (reason := watch(line.decode("utf-8", "replace"))) is not None:
            return pending, reason
    return pending, None


def run(binary: str, args: list[str], limits: Limits, watch: Callable[[str], str | None] | None = None) -> Run:
    """Run ``binary`` (ffmpeg) with ``args`` under ``limits``; return its exit code and log.

    ``watch`` sees each log line as it arrives; returning a string stops the run at once (the
    string becomes ``Run.stopped``). Exceeding ``limits.wall_s`` stops it with ``"deadline"``.
    """
    argv = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", *args]
    try:
        proc = subprocess.Popen(
            _limited(argv, limits),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            process_group=0,
            preexec_fn=None if PRLIMIT and SETPRIV else _child_setup(limits, os.getpid()),
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise ToolMissing(str(exc)) from None
    assert proc.stderr is not None
    deadline = time.monotonic() + limits.wall_s
    chunks: list[bytes] = []
    kept = 0
    pending = b""
    stopped: str | None = None
    drained = False
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stderr, selectors.EVENT_READ)
            while stopped is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stopped = "deadline"
                    break
                if not selector.select(remaining):
                    continue
                data = os.read(proc.stderr.fileno(), 65536)
                if not data:
                    break
                if kept < MAX_LOG_BYTES:
                    chunks.append(data)
                    kept += len(data)
                if watch is not None:
                    pending, stopped = _watch_lines(watch, pending + data)
        drained = stopped is None
    finally:
        if not drained:
            _kill_group(proc)  # stopped, or interrupted (SIGTERM/SIGINT): never leave it running
        returncode = proc.wait()
        proc.stderr.close()
    return Run(returncode, b"".join(chunks).decode("utf-8", "replace"), stopped)


def storage_failure(log: str) -> int | None:
    """The errno of a storage failure ffmpeg logged (disk full, permissions, I/O), if any."""
    for line in log.splitlines():
        if "[error]" not in line and "[fatal]" not in line:
            continue
        for text, number in STORAGE_ERRNOS.items():
            if text in line:
                return number
    return None
