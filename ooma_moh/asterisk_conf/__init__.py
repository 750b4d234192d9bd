"""The Asterisk configuration operators merge into ``/etc/asterisk``, shipped inside the package.

Each ``*.conf`` file beside this module is a commented drop-in (docs/asterisk.md, "Install the
configuration", says what each does). They are package data so that an installed wheel carries
them: ``ooma-moh asterisk-conf --dest DIR`` writes them out with :func:`write_samples`, and the lab
Asterisk builds its own configuration from them (:mod:`ooma_moh.lab.asterisk`), so the files the
tests run against are the files operators get.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from ..errors import OutputError, WouldOverwrite


def sample_names() -> list[str]:
    """The names of the shipped configuration files, sorted."""
    return sorted(entry.name for entry in files(__name__).iterdir() if entry.name.endswith(".conf"))


def sample_text(name: str) -> str:
    """The text of the shipped configuration file ``name`` (e.g. ``musiconhold.conf``)."""
    if name not in sample_names():
        raise KeyError(f"no shipped Asterisk configuration file {name!r}")
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def write_samples(dest: Path, *, force: bool = False) -> list[Path]:
    """Write every shipped configuration file into ``dest`` (created if missing); the paths
    written. Without ``force``, nothing is written when any of them exists already: an operator's
    edited ``pjsip.conf`` must never be replaced by a sample by accident."""
    targets = {name: dest / name for name in sample_names()}
    if not targets:  # a broken install must not look like success
        raise OutputError(f"no Asterisk configuration files in {files(__name__)}: reinstall ooma-moh")
    existing = [path for path in targets.values() if path.exists() or path.is_symlink()]
    if existing and not force:
        raise WouldOverwrite(
            f"{', '.join(str(p) for p in existing)} already exist{'s' if len(existing) == 1 else ''}:"
            " nothing was written (--force replaces them)"
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {dest}: {exc.strerror or exc}") from None
    for name, path in targets.items():
        # Written beside the target and renamed over it, so a failure never leaves half a file.
        partial = path.with_name(f".{name}.partial")
        try:
            partial.write_text(sample_text(name), encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return list(targets.values())
