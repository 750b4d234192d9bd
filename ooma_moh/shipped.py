"""Files shipped inside the package for operators to install: the Asterisk configuration
(:mod:`ooma_moh.asterisk_conf`) and the deployment files (:mod:`ooma_moh.deploy`).

They are package data, read through :mod:`importlib.resources`, so that a wheel installed far from
any checkout carries exactly the files the tests check, and writing them out is the same for both
commands that do it (``asterisk-conf``, ``deploy-files``): all or nothing, never over an operator's
edited copy unless asked, and never half a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from .errors import OutputError, WouldOverwrite


def shipped_names(package: str, suffixes: tuple[str, ...]) -> list[str]:
    """The files of ``package`` whose names end in one of ``suffixes``, subdirectories included,
    as sorted ``/``-separated paths relative to it (``systemd/dropins/local-postgresql.conf``)."""
    found: list[str] = []

    def walk(node: Traversable, prefix: str) -> None:
        for entry in node.iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(suffixes):
                found.append(prefix + entry.name)

    walk(files(package), "")
    return sorted(found)


def shipped_text(package: str, name: str) -> str:
    """The text of the shipped file ``name`` (a path from :func:`shipped_names`) of ``package``."""
    node = files(package)
    for part in name.split("/"):
        node = node / part
    return node.read_text(encoding="utf-8")


def write_all(dest: Path, texts: Mapping[str, str], *, force: bool, what: str) -> list[Path]:
    """Write each ``name -> text`` of ``texts`` to ``dest / name`` (directories created as needed);
    the paths written. ``what`` names the files for the error of an empty ``texts`` (a broken
    install must not look like success). Without ``force`` nothing is written when any target
    exists already: an operator's edited copy must never be replaced by a sample by accident."""
    targets = {name: dest.joinpath(*name.split("/")) for name in texts}
    if not targets:
        raise OutputError(f"no {what}: reinstall ooma-moh")
    existing = [path for path in targets.values() if path.exists() or path.is_symlink()]
    if existing and not force:
        raise WouldOverwrite(
            f"{', '.join(str(p) for p in existing)} already exist{'s' if len(existing) == 1 else ''}:"
            " nothing was written (--force replaces them)"
        )
    for directory in sorted({path.parent for path in targets.values()}):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {directory}: {exc.strerror or exc}") from None
    for name, path in targets.items():
        # Written beside the target and renamed over it, so a failure never leaves half a file.
        partial = path.with_name(f".{path.name}.partial")
        try:
            partial.write_text(texts[name], encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return list(targets.values())
