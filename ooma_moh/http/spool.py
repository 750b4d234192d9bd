"""Where this ``serve http`` receives uploads: a directory of its own under ``<home>/incoming``.

Several servers may share a data home (two on one host behind a proxy, or a restart that overlaps
the old process). Each gets ``incoming/<pid>-<n>/``, and holds an exclusive lock on the ``.lock``
file in it for as long as it runs. At start a server removes only the directories whose lock no
process holds — what a server killed mid-upload left — never one of a live server (before, the
start of a second server deleted the first one's uploads in flight).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import IO

from ..storage.blobs import storage_errors

LOCK = ".lock"


class Spool:
    """One server's spool directory; :meth:`open` at start, :meth:`close` at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path: Path | None = None
        self._lock: IO[str] | None = None

    def open(self) -> Path:
        """Reclaim dead servers' directories, then make and lock this one's."""
        with storage_errors("preparing the upload area"):
            self.root.mkdir(parents=True, exist_ok=True)
            self.reclaim()
            path = self.root / f"{os.getpid()}-{time.monotonic_ns()}"
            path.mkdir()
            self._lock = open(path / LOCK, "w")  # noqa: SIM115 - held until close()
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.path = path
        return path

    def reclaim(self) -> int:
        """Remove the directories no live server holds (and stray files); how many."""
        removed = 0
        for entry in self.root.iterdir():
            if not entry.is_dir():
                entry.unlink(missing_ok=True)  # a spool file of the layout before per-server directories
                removed += 1
                continue
            try:
                with open(entry / LOCK, "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running server's
            except FileNotFoundError:
                pass  # never locked: its server died before it could
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        return removed

    def close(self) -> None:
        """Remove this server's directory and release it."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.close()
            self._lock = None
