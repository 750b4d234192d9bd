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
from collections.abc import Callable, Mapping
from pathlib import Path

from ooma_moh.app import build_service, build_syncer
from ooma_moh.config import load_settings
from ooma_moh.mohdir import MohDirectory
from ooma_moh.publish import Publisher, RealtimePublisher, StaticPublisher


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point.startswith("file:"):
        limit, original = int(point[5:]), MohDirectory._place
        placed: list[Path] = []

        def place(blob: Path, dest: Path) -> None:
            original(blob, dest)
            placed.append(dest)
            if len(placed) >= limit:
                die()

        MohDirectory._place = staticmethod(place)  # type: ignore[method-assign]  # patching the class is this driver's purpose
    elif point == "published":
        for cls in (RealtimePublisher, StaticPublisher):
            original_apply = cls.apply

            def apply(
                self: Publisher,
                upserts: Mapping[str, str],
                deletes: set[str],
                _original: Callable[..., None] = original_apply,
            ) -> None:
                _original(self, upserts, deletes)
                die()

            cls.apply = apply  # type: ignore[method-assign]  # patching the class is this driver's purpose
    elif point == "collect":
        # replaced by a stand-in that kills the process where the original would return
        MohDirectory.collect = lambda *a, **k: die()  # type: ignore[method-assign, assignment]
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    arm(sys.argv[1])
    settings = load_settings()
    service = build_service(settings)
    build_syncer(settings, service).run(None)
    raise SystemExit("the kill point was never reached")
