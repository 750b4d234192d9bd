"""The Asterisk configuration operators merge into ``/etc/asterisk``, shipped inside the package.

Each ``*.conf`` file beside this module is a commented drop-in (docs/asterisk.md, "Install the
configuration", says what each does). They are package data so that an installed wheel carries
them: ``ooma-moh asterisk-conf --dest DIR`` writes them out with :func:`write_samples`, and the lab
Asterisk builds its own configuration from them (:mod:`ooma_moh.lab.asterisk`), so the files the
tests run against are the files operators get.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..shipped import shipped_names, shipped_text, write_all


def sample_names() -> list[str]:
    """The names of the shipped configuration files, sorted."""
    return shipped_names(__name__, (".conf",))


def sample_text(name: str) -> str:
    """The text of the shipped configuration file ``name`` (e.g. ``musiconhold.conf``)."""
    if name not in sample_names():
        raise KeyError(f"no shipped Asterisk configuration file {name!r}")
    return shipped_text(__name__, name)


def write_samples(dest: Path, *, force: bool = False) -> list[Path]:
    """Write every shipped configuration file into ``dest`` (created if missing); the paths
    written. Without ``force``, nothing is written when any of them exists already: an operator's
    edited ``pjsip.conf`` must never be replaced by a sample by accident."""
    texts = {name: sample_text(name) for name in sample_names()}
    return write_all(dest, texts, force=force, what=f"Asterisk configuration files in {files(__name__)}")
