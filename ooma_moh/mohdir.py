"""The directory Asterisk reads tenant music from: ``<moh_dir>/<class>/<version>/moh.<ext>``.

A version directory is built under a dot-name (Asterisk skips dot-files) and renamed into place
complete, so Asterisk never sees part of one; it is never modified afterwards. A version that is
no longer published is *retired* (a ``.retired`` marker inside it records when) and deleted only
by a later sync once ``retain_s`` has passed: a caller who started listening before the switch
keeps playing the old files until their hold ends, and would fall silent if they vanished.

Version directories are completed (:meth:`MohDirectory.build`) in this order, so that a kill at
any step leaves only complete version directories and dot-named partial builds (removed by the
next clean-up), and a power loss none that names a file not on disk:

1. the blobs the incomplete directories lack are downloaded ahead, :data:`THREADS` at once, in
   the directories' order (each checked against its sha256), into the blob store's
   :class:`~ooma_moh.storage.base.Fetcher` — when there are more than :data:`THREADS` of them (a
   catch-up); a few (one tenant's change) are fetched in step 3, one after the other and each
   fsynced, where threads would cost more CPU than they save;
2. once all the blobs of a batch of up to :data:`BATCH` directories are downloaded, they are
   settled: made durable in one commit of the file system, then given their names in the store;
3. each directory of the batch built under its dot-name (files hard-linked from the blob store,
   or copied);
4. the batch made durable: its partial directories and copies — one commit of the file system
   (``syncfs``) for a batch of more than :data:`THREADS` directories, an ``fsync`` of each for
   fewer (a change: a commit of the whole file system would also wait for everything else
   written on it);
5. each renamed into place (a directory of that name that is incomplete is replaced whole);
6. the class directories made durable as in step 4; only then is the batch handed to the
   caller, which publishes it while step 1 goes on for the next batches.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .model import Rendition
from .storage.base import Blobs
from .storage.blobs import fsync_dir, storage_errors, sync_filesystem

BASE_NAME = "moh"
RETIRED_MARKER = ".retired"
#: version directories completed, and made durable, together
BATCH = 200
#: downloads at once; a batch of more directories is made durable by one commit of the file system
THREADS = 8
#: one version directory to complete: (class, version, renditions)
Wanted = tuple[str, str, tuple[Rendition, ...]]


class MohDirectory:
    """Materialises tenants' renditions where Asterisk plays them from."""

    def __init__(self, root: Path, blobs: Blobs) -> None:
        self.root = root
        self.blobs = blobs

    def version_dir(self, moh_class: str, version: str) -> Path:
        """Where one version of a class's files lives."""
        return self.root / moh_class / version

    def is_complete(self, moh_class: str, version: str, renditions: Iterable[Rendition]) -> bool:
        """Whether the version directory holds every rendition with the right size."""
        directory = self.version_dir(moh_class, version)
        for rendition in renditions:
            path = directory / f"{BASE_NAME}.{rendition.extension}"
            try:
                if path.stat().st_size != rendition.size:
                    return False
            except (FileNotFoundError, NotADirectoryError):  # gone, or a file where a directory was
                return False
        return True

    def build(
        self, wanted: Sequence[Wanted], *, batch: int | None = None, fetched: Callable[[], None] | None = None
    ) -> Generator[list[int], None, None]:
        """Complete the version directory of each of ``wanted`` (class, version, renditions), in
        its order and in batches of ``batch`` (default :data:`BATCH`), by the rules of the module docstring; yields each
        batch's files written (per directory) once the batch is in place and durable, and goes on
        downloading the next batches while the caller publishes it. Close it (``contextlib.closing``)
        when the caller stops early: the downloads not started are cancelled, and no download
        outlives it. ``fetched()`` is called after each downloaded blob (in this thread)."""
        missing: dict[str, None] = {}  # the blobs incomplete directories lack, in their order
        complete = [self.is_complete(*w) for w in wanted]  # complete already: kept as they are
        for (_, _, renditions), done in zip(wanted, complete, strict=True):
            if not done:
                missing.update((r.sha256, None) for r in renditions if not self.blobs.path(r.sha256).is_file())
        ahead = len(missing) > THREADS  # step 1; a few are fetched as their batch is built
        size = batch or BATCH
        with self.blobs.fetching() if ahead else contextlib.nullcontext() as fetcher:
            pending = {sha: _pool().submit(fetcher.fetch, sha) for sha in missing} if fetcher else {}
            try:
                for start in range(0, len(wanted), size):
                    chunk = wanted[start : start + size]
                    for _, _, renditions in chunk:
                        for rendition in renditions:
                            if (future := pending.pop(rendition.sha256, None)) is not None:
                                future.result()  # its failure is the sync's
                                if fetched is not None:
                                    fetched()
                    if fetcher:
                        fetcher.settle()  # step 2
                    yield self._build_batch(chunk, complete[start : start + size])
            finally:
                for future in pending.values():
                    future.cancel()
                futures.wait(pending.values())

    def materialise(self, moh_class: str, version: str, renditions: tuple[Rendition, ...]) -> int:
        """Make one version directory exist and be complete (a batch of one); return the number
        of files written. A file-system failure (disk full, permissions) is a
        :class:`StorageError`; the partial build is removed and nothing Asterisk reads has changed."""
        complete = self.is_complete(moh_class, version, renditions)
        return self._build_batch([(moh_class, version, renditions)], [complete])[0]

    def _build_batch(self, chunk: Sequence[Wanted], complete: Sequence[bool]) -> list[int]:
        """Steps 3 to 6 of the module docstring for one batch (``complete``: per directory,
        whether it is complete already); per directory, the files written."""
        written: list[int] = []
        built: list[tuple[Path, Path]] = []  # (partial, target) of the directories this batch builds
        try:
            for (moh_class, version, renditions), done in zip(chunk, complete, strict=True):
                if done:
                    self._keep(moh_class, version)
                    written.append(0)
                else:
                    written.append(self._build_partial(moh_class, version, renditions, built))
            names = ", ".join(target.parent.name for _, target in built[:3]) + (", …" if len(built) > 3 else "")
            with storage_errors(f"writing the MOH files of class {names}"):
                self._make_durable([partial for partial, _ in built])  # step 4
                for partial, target in built:  # step 5
                    if target.exists():  # incomplete (e.g. damaged by hand): replaced whole
                        shutil.rmtree(target)
                    os.rename(partial, target)
                self._make_durable([target.parent for _, target in built])  # step 6
        except BaseException:
            for partial, _ in built:  # a half-copied file would only fill the disk more
                shutil.rmtree(partial, ignore_errors=True)
            raise
        return written

    def _keep(self, moh_class: str, version: str) -> None:
        """A complete version directory wanted again: no longer retired."""
        with storage_errors(f"preparing the MOH directory of class {moh_class}"):
            (self.version_dir(moh_class, version) / RETIRED_MARKER).unlink(missing_ok=True)

    def _build_partial(
        self, moh_class: str, version: str, renditions: tuple[Rendition, ...], built: list[tuple[Path, Path]]
    ) -> int:
        """Step 3 for one incomplete directory, noted in ``built`` as soon as it exists (to be
        removed if the batch fails); the files written."""
        target = self.version_dir(moh_class, version)
        with storage_errors(f"preparing the MOH directory of class {moh_class}"):
            try:
                os.mkdir(target.parent)
                fresh = True
            except FileExistsError:
                fresh = False
            except FileNotFoundError:  # the MOH directory itself is new
                target.parent.mkdir(parents=True, exist_ok=True)
                fresh = True
            if fresh:
                os.chmod(target.parent, 0o755)
        with storage_errors(f"writing the MOH files of class {moh_class}"):
            partial = target.parent / f".partial-{version}-{os.getpid()}"
            if not fresh:  # left by a build of this process that failed
                shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            built.append((partial, target))
            for rendition in renditions:
                self._place(self.blobs.locate(rendition.sha256), partial / f"{BASE_NAME}.{rendition.extension}")
            os.chmod(partial, 0o755)
        return len(renditions)

    @staticmethod
    def _place(blob: Path, dest: Path) -> None:
        try:
            os.link(blob, dest)  # blobs are immutable and 0644 (BlobStore.put): a free, complete copy
        except OSError:
            shutil.copyfile(blob, dest)
            os.chmod(dest, 0o644)

    def _make_durable(self, paths: Sequence[Path]) -> None:
        """Steps 4 and 6: the directories ``paths`` (and the files in them) durable — by one
        commit of the file system for more than :data:`THREADS`, else an fsync of each (and of
        each copied file)."""
        if len(paths) > THREADS:
            sync_filesystem(self.root)
            return
        for directory in paths:
            for entry in os.scandir(directory):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_nlink == 1:  # a copy, not a link
                    with open(entry.path, "rb") as fh:
                        os.fsync(fh.fileno())
            fsync_dir(directory)

    def versions(self, classes: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Class directories (all, or just ``classes``) and their version directories
        (dot-entries excluded)."""
        result: dict[str, list[str]] = {}
        if not self.root.is_dir():
            return result
        candidates = self.root.iterdir() if classes is None else (self.root / c for c in classes)
        for class_dir in sorted(candidates):
            if class_dir.is_dir() and not class_dir.name.startswith("."):
                result[class_dir.name] = sorted(
                    v.name for v in class_dir.iterdir() if v.is_dir() and not v.name.startswith(".")
                )
        return result

    def collect(
        self, published: dict[str, str], retain_s: float, now: float | None = None, classes: Iterable[str] | None = None
    ) -> tuple[int, int]:
        """Retire versions that ``published`` (class -> directory) no longer names, delete those
        retired for ``retain_s`` or longer, and remove abandoned partial builds — in every class
        directory, or only in ``classes``.

        Returns (retired now, deleted).
        """
        with storage_errors("cleaning up old versions in the MOH directory"):
            return self._collect(published, retain_s, time.time() if now is None else now, classes)

    def _collect(
        self, published: dict[str, str], retain_s: float, now: float, classes: Iterable[str] | None
    ) -> tuple[int, int]:
        in_use = {Path(d) for d in published.values()}
        retired = deleted = 0
        for moh_class, versions in self.versions(classes).items():
            class_dir = self.root / moh_class
            for leftover in class_dir.glob(".partial-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            for version in versions:
                directory = class_dir / version
                if directory in in_use:
                    continue
                marker = directory / RETIRED_MARKER
                if not marker.exists():
                    marker.write_text(f"{now}\n")
                    os.utime(marker, (now, now))
                    retired += 1
                elif now - marker.stat().st_mtime >= retain_s:
                    shutil.rmtree(directory)
                    deleted += 1
            if not any(class_dir.iterdir()):
                class_dir.rmdir()
        return retired, deleted


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """The process's download threads, started at first use and kept: a thread started per sync
    was a good part of the CPU an agent spent on one change."""
    return ThreadPoolExecutor(THREADS, thread_name_prefix="ooma-moh-fetch")
