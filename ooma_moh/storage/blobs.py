"""Content-addressed files (originals and renditions) on the local filesystem.

A blob lives at ``<root>/<sha[:2]>/<sha>``. It appears there by an atomic rename of a fully
written, fsynced file, so a reader never sees part of one. Blobs are immutable; unreferenced ones
are moved to a trash by :meth:`BlobStore.collect` under an exclusive lock that writers hold
shared, and deleted from there after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StorageError

if TYPE_CHECKING:
    from .base import Fetcher

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def storage_errors(doing: str) -> Iterator[None]:
    """Translate ``OSError`` from the filesystem into :class:`StorageError` (no paths in it)."""
    try:
        yield
    except OSError as exc:
        raise StorageError.from_errno(exc.errno, doing) from exc


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Make everything written so far on the file system holding ``path`` durable, file data
    and names alike, in one commit of that file system (``syncfs(2)``): for a batch of hundreds of
    files, where an ``fsync`` each is a commit each; ``sync(2)`` where the C library has no
    ``syncfs``. A write-back error of that file system is an ``OSError``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS is None:
            os.sync()
        elif _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)


def _syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _syncfs()


class _Present:
    """The local store's :class:`Fetcher`: its blobs are here and durable already (a trashed
    one is brought back)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def fetch(self, sha256: str) -> None:
        self.store.locate(sha256)

    def settle(self) -> None:
        pass


class BlobStore:
    """Immutable files addressed by their sha256, plus a scratch area on the same filesystem.

    Deletion is two-step so that a catalog restored from a backup still finds its files:
    :meth:`collect` moves unreferenced blobs to ``<root>/trash/`` and deletes them only once they
    have been there ``grace_s`` seconds; :meth:`locate` brings a trashed blob back.
    """

    def __init__(self, root: Path, *, grace_s: float = 7 * 86400.0, writable: bool = True) -> None:
        self.root = root
        self.scratch_root = root / "tmp"
        self.trash = root / "trash"
        self.grace_s = grace_s
        self.writable = writable
        self._lock_path = root / ".lock"
        if writable:
            with storage_errors("preparing the blob store"):
                self.scratch_root.mkdir(parents=True, exist_ok=True)
                self.trash.mkdir(exist_ok=True)
            self.reclaim_scratch()

    def path(self, sha256: str) -> Path:
        """Where the blob with this sha256 is (or would be) stored."""
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether this blob is stored (trashed blobs do not count)."""
        return self.path(sha256).is_file()

    def holds_files(self) -> bool:
        """Whether any blob is stored or trashed (used to refuse a lost catalog)."""
        if not self.root.is_dir():
            return False
        for entry in self.root.iterdir():
            if entry.is_dir() and (len(entry.name) == 2 or entry == self.trash) and any(True for _ in entry.iterdir()):
                return True
        return False

    def stored(self) -> set[str]:
        """The sha256 of every stored blob (trashed ones not included)."""
        with storage_errors("listing the blob store"):
            return {p.name for p in self.root.glob("??/*") if p.is_file()}

    def put(self, source: Path, *, sha256: str | None = None, cached: bool = False) -> tuple[str, int]:
        """Move ``source`` (in the scratch area) into the store; return (sha256, size).
        ``sha256``: its digest, computed by the caller as it wrote the file (not read again).
        ``cached``: a copy of an object storage's object, which the caller wrote and fsynced:
        its content is durable before it has a name here, but the name itself is not made
        durable (lost in a power cut, the object is fetched again)."""
        with storage_errors("storing the renditions"):
            sha = sha256 or sha256_file(source)
            size = source.stat().st_size
            target = self.path(sha)
            if target.is_file() and target.stat().st_size == size:
                source.unlink()
                return sha, size
            target.parent.mkdir(exist_ok=True)
            if not cached:
                with open(source, "rb") as fh:
                    os.fsync(fh.fileno())
            os.chmod(source, 0o644)
            os.replace(source, target)
            if not cached:
                fsync_dir(target.parent)
            return sha, size

    def locate(self, sha256: str) -> Path:
        """The path of a stored blob, brought back from the trash if it was collected;
        ``StorageError`` (``blob_missing``) if it is gone."""
        path = self.path(sha256)
        if path.is_file():
            return path
        trashed = self.trash / sha256
        if trashed.is_file():
            if not self.writable:
                return trashed
            with storage_errors("restoring a stored file from the trash"):
                path.parent.mkdir(exist_ok=True)
                os.replace(trashed, path)
            return path
        raise StorageError(
            "blob_missing",
            f"a stored file is missing from the blob store (sha256"
            f" {sha256[:16]}…): restore the blob directory from a backup",
        )

    def read(self, sha256: str) -> bytes:
        """The bytes of a blob, checked against its sha256."""
        path = self.locate(sha256)
        with storage_errors("reading a stored file"):
            data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StorageError(
                "blob_damaged",
                f"a stored file is damaged (sha256 {sha256[:16]}… does"
                " not match its content): restore the blob directory from a backup",
            )
        return data

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[bool]:
        with storage_errors("locking the blob store"):
            fh = open(self._lock_path, "a+")  # noqa: SIM115 - closed by the with below, outside the error mapping
        with fh:
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
        """A private scratch directory, removed afterwards; blobs put meanwhile are safe from GC
        (the store's lock is held shared until then)."""
        with contextlib.ExitStack() as stack:
            with storage_errors("preparing the upload"):
                lock = stack.enter_context(open(self._lock_path, "a+"))
                fcntl.flock(lock, fcntl.LOCK_SH)
                path = self.scratch_root / f"{os.getpid()}-{time.monotonic_ns()}"
                path.mkdir()
            stack.callback(shutil.rmtree, path, ignore_errors=True)
            yield path

    @contextlib.contextmanager
    def fetching(self) -> Iterator[Fetcher]:
        """A :class:`Fetcher`: blobs here are already complete and durable."""
        yield _Present(self)

    @contextlib.contextmanager
    def scratch_file(self) -> Iterator[Path]:
        """A private scratch file's name (not created), removed afterwards if it is still there;
        as :meth:`scratch`, but no directory is made and removed for it (a download into the
        cache of object storage: one per object a cold node fetches)."""
        with contextlib.ExitStack() as stack:
            with storage_errors("preparing a download"):
                lock = stack.enter_context(open(self._lock_path, "a+"))
                fcntl.flock(lock, fcntl.LOCK_SH)
            path = self.scratch_root / f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}.part"
            stack.callback(_remove, path)
            yield path

    def reclaim_scratch(self) -> None:
        """Remove scratch directories and files of writers that died (``kill -9``), when no
        writer runs."""
        with self._locked(fcntl.LOCK_EX | fcntl.LOCK_NB) as acquired:
            if acquired:
                for leftover in self.scratch_root.iterdir():
                    _remove(leftover)

    def collect(self, referenced: Callable[[], set[str]], now: float | None = None) -> int:
        """Move blobs not in ``referenced()`` to the trash, delete those trashed ``grace_s`` ago,
        remove abandoned scratch dirs; return the number of blobs moved to the trash.

        ``referenced`` is called with writers locked out, so an upload cannot commit between the
        read of the catalog and the clean-up. Skipped (returns 0) while any writer holds a scratch
        directory, whose blobs the catalog may not reference yet.
        """
        now = time.time() if now is None else now
        moved = 0
        with self._locked(fcntl.LOCK_EX | fcntl.LOCK_NB) as acquired:
            if not acquired:
                return 0
            keep = referenced()
            with storage_errors("cleaning up unused files"):
                for leftover in self.scratch_root.iterdir():
                    _remove(leftover)
                for shard in self.root.iterdir():
                    if not shard.is_dir() or len(shard.name) != 2:
                        continue
                    for blob in shard.iterdir():
                        if blob.name not in keep:
                            os.replace(blob, self.trash / blob.name)
                            os.utime(self.trash / blob.name, (now, now))
                            moved += 1
                for trashed in self.trash.iterdir():
                    if trashed.name in keep:  # referenced again (a restored catalog): bring it back
                        self.path(trashed.name).parent.mkdir(exist_ok=True)
                        os.replace(trashed, self.path(trashed.name))
                    elif now - trashed.stat().st_mtime >= self.grace_s:
                        trashed.unlink()
        return moved


def _remove(path: Path) -> None:
    """Remove a scratch directory or file, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
