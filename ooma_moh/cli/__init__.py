"""``ooma-moh``: the operators' command line. Commands are thin: build the service, call it,
print the result (``--json`` for scripts), turn ``OomaMohError`` into a one-line failure.

One module per group of commands (:mod:`.tenants`, :mod:`.access`, :mod:`.serve`,
:mod:`.cluster`, :mod:`.deploy`, :mod:`.stats`), what they share in :mod:`.base`, how results are
shown in :mod:`.present` (hold statistics in :mod:`.stats` itself).
"""

from __future__ import annotations

from ..doctor import doctor_command
from . import access, cluster, deploy, serve, stats, tenants
from .base import main
from .serve import setup_logging

main.add_command(doctor_command)

__all__ = ["access", "cluster", "deploy", "main", "serve", "setup_logging", "stats", "tenants"]
