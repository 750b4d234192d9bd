"""Run `ooma-moh sync --all` and SIGKILL ourselves at a chosen point
(test_sync_asterisk.py::test_killed_sync_converges_on_rerun).

usage: python -m tests.integration.sync_crash_driver POINT   (settings from OOMA_MOH_* variables)
POINT: file:N (after the N-th rendition file is placed), published (after the publication
switch, before any reload and clean-up), collect (during clean-up of old versions).
"""

from __future__ import annotations

import os
import signal
import sys

from ooma_moh.app import build_service, build_syncer
from ooma_moh.config import load_settings
from ooma_moh.mohdir import MohDirectory
from ooma_moh.publish import RealtimePublisher, StaticPublisher


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point.startswith("file:"):
        limit, original, placed = int(point[5:]), MohDirectory._place, []

        def place(blob, dest):  # type: ignore[no-untyped-def]
            original(blob, dest)
            placed.append(dest)
            if len(placed) >= limit:
                die()

        MohDirectory._place = staticmethod(place)  # type: ignore[assignment]
    elif point == "published":
        for cls in (RealtimePublisher, StaticPublisher):
            original_apply = cls.apply

            def apply(self, upserts, deletes, _original=original_apply):  # type: ignore[no-untyped-def]
                _original(self, upserts, deletes)
                die()

            cls.apply = apply  # type: ignore[method-assign]
    elif point == "collect":
        MohDirectory.collect = lambda *a, **k: die()  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    arm(sys.argv[1])
    settings = load_settings()
    service = build_service(settings)
    build_syncer(settings, service).run(None)
    raise SystemExit("the kill point was never reached")
