"""The directory Asterisk reads tenant music from: ``<moh_dir>/<class>/<version>/moh.<ext>``.

A version directory is built under a dot-name (Asterisk skips dot-files) and renamed into place
complete, so Asterisk never sees part of one; it is never modified afterwards. A version that is
no longer published is *retired* (a ``.retired`` marker inside it records when) and deleted only
by a later sync once ``retain_s`` has passed: a caller who started listening before the switch
keeps playing the old files until their hold ends, and would fall silent if they vanished.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import StorageError
from .model import Rendition
from .storage.base import Blobs
from .storage.blobs import fsync_dir

BASE_NAME = "moh"
RETIRED_MARKER = ".retired"


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

    def prefetch(
        self, renditions: Iterable[Rendition], threads: int = 8, fetched: Callable[[], None] | None = None
    ) -> None:
        """Bring the blobs of incomplete version directories to local disk in parallel (object
        storage: one download at a time is what a cold node's catch-up waits on; the local store
        has them already). Raises the first failure; what was fetched stays in the cache.
        ``fetched()`` is called after each blob (in this thread): a catch-up's progress."""
        missing = sorted({r.sha256 for r in renditions if not self.blobs.path(r.sha256).is_file()})
        if len(missing) < 2:
            return
        with ThreadPoolExecutor(min(threads, len(missing)), thread_name_prefix="ooma-moh-fetch") as pool:
            for _ in pool.map(self.blobs.locate, missing):
                if fetched is not None:
                    fetched()

    def materialise(self, moh_class: str, version: str, renditions: tuple[Rendition, ...]) -> int:
        """Make the version directory exist and be complete; return the number of files written.
        A file-system failure (disk full, permissions) is a :class:`StorageError`; the partial
        build is removed and nothing Asterisk reads has changed."""
        target = self.version_dir(moh_class, version)
        try:
            if self.is_complete(moh_class, version, renditions):
                (target / RETIRED_MARKER).unlink(missing_ok=True)
                return 0
            class_dir = target.parent
            class_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(class_dir, 0o755)
        except OSError as exc:
            raise StorageError.from_errno(exc.errno, f"preparing the MOH directory of class {moh_class}") from None
        partial = class_dir / f".partial-{version}-{os.getpid()}"
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for rendition in renditions:
                self._place(self.blobs.locate(rendition.sha256), partial / f"{BASE_NAME}.{rendition.extension}")
            os.chmod(partial, 0o755)
            fsync_dir(partial)
            if target.exists():  # incomplete (e.g. damaged by hand): replace it whole
                shutil.rmtree(target)
            os.rename(partial, target)
            fsync_dir(class_dir)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)  # a half-copied file would only fill the disk more
            raise StorageError.from_errno(exc.errno, f"writing the MOH files of class {moh_class}") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return len(renditions)

    @staticmethod
    def _place(blob: Path, dest: Path) -> None:
        try:
            os.link(blob, dest)  # blobs are immutable: a hard link is a free, complete copy
        except OSError:
            shutil.copyfile(blob, dest)
            with open(dest, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(dest, 0o644)

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
        try:
            return self._collect(published, retain_s, time.time() if now is None else now, classes)
        except OSError as exc:
            raise StorageError.from_errno(exc.errno, "cleaning up old versions in the MOH directory") from None

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
