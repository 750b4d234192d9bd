"""Content-addressed files (originals and renditions) on the local filesystem.

A blob lives at ``<root>/<sha[:2]>/<sha>``. It appears there by an atomic rename of a fully
written, fsynced file, so a reader never sees part of one. Blobs are immutable; unreferenced ones
are removed by :meth:`BlobStore.collect` under an exclusive lock that writers hold shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Immutable files addressed by their sha256, plus a scratch area on the same filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scratch_root = root / "tmp"
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        self._lock_path = root / ".lock"

    def path(self, sha256: str) -> Path:
        """Where the blob with this sha256 is (or would be) stored."""
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether this blob is stored."""
        return self.path(sha256).is_file()

    def put(self, source: Path) -> tuple[str, int]:
        """Move ``source`` (in the scratch area) into the store; return (sha256, size)."""
        sha = sha256_file(source)
        size = source.stat().st_size
        target = self.path(sha)
        if target.is_file() and target.stat().st_size == size:
            source.unlink()
            return sha, size
        target.parent.mkdir(exist_ok=True)
        with open(source, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(source, 0o644)
        os.replace(source, target)
        fsync_dir(target.parent)
        return sha, size

    def read(self, sha256: str) -> bytes:
        """The bytes of a blob."""
        return self.path(sha256).read_bytes()

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[bool]:
        with open(self._lock_path, "a+") as fh:
            try:
                fcntl.flock(fh, mode)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private scratch directory, removed afterwards; blobs put meanwhile are safe from GC."""
        with self._locked(fcntl.LOCK_SH):
            path = self.scratch_root / f"{os.getpid()}-{time.monotonic_ns()}"
            path.mkdir()
            try:
                yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)

    def collect(self, referenced: set[str]) -> int:
        """Remove blobs not in ``referenced`` and abandoned scratch dirs; return blobs removed.

        Skipped (returns 0) while any writer holds a scratch directory, whose blobs the catalog
        may not reference yet.
        """
        removed = 0
        with self._locked(fcntl.LOCK_EX | fcntl.LOCK_NB) as acquired:
            if not acquired:
                return 0
            for leftover in self.scratch_root.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
            for shard in self.root.iterdir():
                if not shard.is_dir() or len(shard.name) != 2:
                    continue
                for blob in shard.iterdir():
                    if blob.name not in referenced:
                        blob.unlink(missing_ok=True)
                        removed += 1
        return removed
