"""What an agent published, checked against its node's disk at every heartbeat.

After each sync the agent notes, for every class it publishes, the version directory and the
files it must hold — each rendition's ``moh.<ext>`` with its size and sha256, from the catalog —
and each file's identity on disk (device, inode, size, modification time): the manifest,
:class:`Published`. A check then costs one ``stat`` per file; per class, in this order:

1. the version directory is gone: ``directory missing``;
2. a file is gone: ``moh.<ext> missing``; it has another size: ``moh.<ext> size N, expected M``;
3. a file's identity changed (rewritten in place, replaced): its sha256 is computed once; other
   content is ``moh.<ext> altered``, the same content is taken as its new identity (no damage).

Not seen: a file altered, its size kept, before the agent first noted it (an agent notes what it
finds when it starts; from then on every change is seen).

A re-publication (a sync of the tenant) rebuilds a version directory that is missing or lacks a
file, but keeps a file of the right size; :func:`prepare_repair` first removes each file that is
there but wrong, and the local cache's copy of its blob when it is that very file (a hard link).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StorageError
from .model import Rendition
from .mohdir import BASE_NAME

Identity = tuple[int, int, int, int]  # (device, inode, size, mtime in ns)


@dataclass(frozen=True)
class Damage:
    """What a check found wrong in one published class; ``wrong``: (file name, its sha256) of
    each file that is there but not what was published."""

    moh_class: str
    directory: Path
    problems: tuple[str, ...]
    wrong: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        return f"{self.moh_class}/{self.directory.name}: {', '.join(self.problems)}"


def describe(damages: Iterable[Damage]) -> str:
    """The damages on one line, for the log and ``ooma-moh nodes``."""
    return "; ".join(d.text() for d in damages)


@dataclass
class _Entry:
    directory: Path
    files: dict[str, tuple[int, str]]  # name -> (size, sha256)
    seen: dict[str, Identity] = field(default_factory=dict)


class Published:
    """The agent's manifest of what its node publishes (module docstring)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def classes(self) -> set[str]:
        return set(self._entries)

    def note(self, moh_class: str, directory: Path, renditions: Iterable[Rendition]) -> None:
        """``moh_class`` is published from ``directory`` with ``renditions``. A class noted
        already with the same directory and files keeps the identities it had: a change since
        is for :meth:`check` to see, not to be taken as the published state."""
        files = {f"{BASE_NAME}.{r.extension}": (r.size, r.sha256) for r in renditions}
        known = self._entries.get(moh_class)
        if known is not None and known.directory == directory and known.files == files:
            return
        entry = _Entry(directory, files)
        for name in files:
            if (identity := _identity(directory / name)) is not None:
                entry.seen[name] = identity
        self._entries[moh_class] = entry

    def keep_only(self, classes: Iterable[str], within: Collection[str] | None = None) -> None:
        """Forget every class not in ``classes`` (no longer published); with ``within``, only
        among those (a sync of named tenants says nothing of the others)."""
        wanted = set(classes)
        self._entries = {
            c: e for c, e in self._entries.items() if c in wanted or (within is not None and c not in within)
        }

    def check(self, classes: Iterable[str] | None = None) -> list[Damage]:
        """What is wrong in the published version directories (all, or ``classes``)."""
        wanted = None if classes is None else set(classes)
        damages = []
        for moh_class, entry in sorted(self._entries.items()):
            if wanted is None or moh_class in wanted:
                damage = _check(moh_class, entry)
                if damage is not None:
                    damages.append(damage)
        return damages


def _check(moh_class: str, entry: _Entry) -> Damage | None:
    """One class by the order in the module docstring."""
    if not entry.directory.is_dir():
        return Damage(moh_class, entry.directory, ("directory missing",))
    problems: list[str] = []
    wrong: list[tuple[str, str]] = []
    for name, (size, sha256) in sorted(entry.files.items()):
        path = entry.directory / name
        identity = _identity(path)
        if identity is None:
            problems.append(f"{name} missing")
        elif identity[2] != size:
            problems.append(f"{name} size {identity[2]}, expected {size}")
            wrong.append((name, sha256))
        elif identity != entry.seen.get(name):
            if _sha256(path) == sha256:
                entry.seen[name] = identity
            else:
                problems.append(f"{name} altered")
                wrong.append((name, sha256))
    return Damage(moh_class, entry.directory, tuple(problems), tuple(wrong)) if problems else None


def prepare_repair(damage: Damage, blob_path: Callable[[str], Path], *, cache: bool) -> None:
    """Remove what a re-publication would keep (module docstring): each wrong file, and its
    blob's local copy when that copy is the same file. ``cache``: the blob store is a cache of
    object storage (the copy is fetched again, checked); otherwise it is the only copy, and a
    damaged one is a :class:`StorageError` (restore it from a backup)."""
    for name, sha256 in damage.wrong:
        path, blob = damage.directory / name, blob_path(sha256)
        try:
            same = os.path.samefile(path, blob)
        except OSError:
            same = False
        try:
            if same and not cache:
                raise StorageError(
                    "blob_damaged",
                    f"{damage.moh_class}: {name} is a link to the blob store's only copy, which is damaged"
                    f" too (sha256 {sha256[:16]}…): restore the blob directory from a backup",
                )
            if same:
                blob.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError.from_errno(exc.errno, f"removing a damaged file of class {damage.moh_class}") from None


def _identity(path: Path) -> Identity | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
