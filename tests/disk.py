"""Real filesystem faults for tests (root only): a small tmpfs that can be filled or made read-only."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``path`` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Fill ``path``'s filesystem until about ``leave`` bytes are free (page-granular)."""
    filler = path / ".filler"
    with open(filler, "ab") as fh:
        gap = free_bytes(path) - leave
        if gap > 0:
            try:
                fh.write(b"\0" * gap)
                fh.flush()
            except OSError:
                pass
    return filler


def remount(path: Path, mode: str) -> None:
    """Remount the filesystem at ``path`` ``ro`` or ``rw``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)
