"""Run `ooma-moh sync --all` and SIGKILL ourselves at a chosen point
(test_sync_asterisk.py::test_killed_sync_converges_on_rerun).

usage: python -m tests.integration.sync_crash_driver POINT   (settings from OOMA_MOH_* variables)
POINT: file:N (after the N-th rendition file is placed), published (after the publication
switch, before any reload and clean-up), collect (during clean-up of old versions); in a catch-up
of batches of 4 version directories (test_catchup.py): partial:N (after the N-th directory is
built under its dot-name), fsync:N (after the N-th fsync of a batch's directories: odd N its
partial builds, before their renames; even N its class directories), batch:N (after the N-th
batch is switched).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ooma_moh import mohdir
from ooma_moh.app import build_service, build_syncer
from ooma_moh.config import load_settings
from ooma_moh.mohdir import MohDirectory
from ooma_moh.publish import Publisher, RealtimePublisher, StaticPublisher


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after(owner: object, name: str, limit: int) -> None:
    """Kill the process once ``owner.name`` has returned ``limit`` times."""
    original, calls = getattr(owner, name), []

    def counted(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) >= limit:
            die()
        return result

    setattr(owner, name, counted)


#: the catch-up's kill points: what returns before the process is killed
CATCH_UP: dict[str, list[tuple[object, str]]] = {
    "partial": [(MohDirectory, "_build_partial")],
    "fsync": [(MohDirectory, "_make_durable")],
    "batch": [(RealtimePublisher, "apply"), (StaticPublisher, "apply")],
}


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
                *,
                sweep: bool = False,
                _original: Callable[..., None] = original_apply,
            ) -> None:
                _original(self, upserts, deletes, sweep=sweep)
                die()

            cls.apply = apply  # type: ignore[method-assign]  # patching the class is this driver's purpose
    elif point.split(":")[0] in CATCH_UP:
        mohdir.BATCH = 4
        for owner, name in CATCH_UP[point.split(":")[0]]:
            after(owner, name, int(point.split(":")[1]))
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
