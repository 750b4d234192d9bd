"""Run one ingest and SIGKILL ourselves at a chosen point (used by test_crash_safety.py).

usage: python -m tests.integration.crash_driver HOME TENANT FILE POINT
POINT: decoded (between the two ffmpeg runs), put:N (after the N-th blob is stored),
in-transaction (catalog rows written, not committed), committed (before garbage collection).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ooma_moh.app import build_service
from ooma_moh.config import Settings
from ooma_moh.media import FfmpegConverter
from ooma_moh.storage import BlobStore, SqliteCatalog


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point == "decoded":
        FfmpegConverter.encode = lambda *a, **k: die()  # type: ignore[method-assign]
    elif point.startswith("put:"):
        limit, original = int(point[4:]), BlobStore.put
        calls = []

        def put(self: BlobStore, source: Path) -> tuple[str, int]:
            result = original(self, source)
            calls.append(result)
            if len(calls) >= limit:
                die()
            return result
        BlobStore.put = put  # type: ignore[method-assign]
    elif point == "in-transaction":
        original_replace = SqliteCatalog._replace_tenant

        def replace(self, db, *args):  # type: ignore[no-untyped-def]
            original_replace(self, db, *args)
            die()
        SqliteCatalog._replace_tenant = replace  # type: ignore[method-assign]
    elif point == "committed":
        BlobStore.collect = lambda *a, **k: die()  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    home, tenant, file, point = sys.argv[1:5]
    arm(point)
    build_service(Settings(home=home)).upload(tenant, Path(file), accept_disclaimer=True, accepted_by="crash")
    raise SystemExit("the kill point was never reached")
