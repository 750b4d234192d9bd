"""The files operators install beside the package, shipped inside it: the systemd units, the
sysusers.d and tmpfiles.d files, the environment file template and the drop-in
(``systemd/``, docs/operations.md), the Prometheus alerting rules (``prometheus/``) and the
Grafana dashboard (``grafana/``, both docs/monitoring.md).

This directory is their only copy. They are package data so that an operator who installed the
wheel gets them with ``ooma-moh deploy-files --dest DIR`` (:func:`write_deploy_files`) instead of
hunting for a checkout, and so that the files the tests check (``tests/integration/test_units.py``,
``tests/unit/test_deploy_files.py``) are the files operators run.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..shipped import shipped_names, shipped_text, write_all

#: what is shipped here (this module and Python caches are not)
SUFFIXES = (".service", ".conf", ".example", ".md", ".yml", ".json")


def deploy_names() -> list[str]:
    """The shipped deployment files as sorted paths relative to this package
    (``systemd/ooma-moh-ari.service``, ``prometheus/ooma-moh-rules.yml``, …)."""
    return shipped_names(__name__, SUFFIXES)


def deploy_text(name: str) -> str:
    """The text of the shipped deployment file ``name`` (one of :func:`deploy_names`)."""
    if name not in deploy_names():
        raise KeyError(f"no shipped deployment file {name!r}")
    return shipped_text(__name__, name)


def write_deploy_files(dest: Path, *, force: bool = False) -> list[Path]:
    """Write every shipped deployment file under ``dest`` with its subdirectory (``dest/systemd/…``,
    ``dest/prometheus/…``, ``dest/grafana/…``); the paths written. Without ``force`` nothing is
    written when any of them exists already (an edited copy is never replaced by accident)."""
    texts = {name: deploy_text(name) for name in deploy_names()}
    return write_all(dest, texts, force=force, what=f"deployment files in {files(__name__)}")
