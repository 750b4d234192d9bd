"""Run one ingest and SIGKILL ourselves at a chosen point (used by test_crash_safety.py).

usage: python -m tests.integration.crash_driver TENANT FILE POINT   (settings from OOMA_MOH_*)
POINT: decoded (between the two ffmpeg runs), put:N (after the N-th blob is stored),
in-transaction (catalog rows written, not committed), committed (before garbage collection).
Whatever the back end (SQLite or PostgreSQL, local blobs or object storage), the same points.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ooma_moh.app import build_service
from ooma_moh.config import load_settings
from ooma_moh.media import FfmpegConverter
from ooma_moh.service import MohService
from ooma_moh.storage import Blobs, Catalog


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(service: MohService, point: str) -> None:
    blobs, catalog = type(service.blobs), type(service.catalog)
    if point == "decoded":
        # replaced by a stand-in that kills the process where the original would return
        FfmpegConverter.encode = lambda *a, **k: die()  # type: ignore[method-assign, assignment]
    elif point.startswith("put:"):
        limit, original = int(point[4:]), blobs.put
        calls: list[tuple[str, int]] = []

        def put(self: Blobs, source: Path) -> tuple[str, int]:
            result = original(self, source)
            calls.append(result)
            if len(calls) >= limit:
                die()
            return result

        blobs.put = put  # type: ignore[method-assign]  # patching the class is this driver's purpose
    elif point == "in-transaction":
        # a private method of the SQLite and PostgreSQL catalogs, not part of the Catalog protocol
        original_replace = catalog._point_tenant  # type: ignore[attr-defined]

        def replace(self: Catalog, db: object, *args: object) -> None:
            original_replace(self, db, *args)
            die()

        catalog._point_tenant = replace  # type: ignore[attr-defined]  # (the same private method)
    elif point == "committed":
        # replaced by a stand-in that kills the process where the original would return
        blobs.collect = lambda *a, **k: die()  # type: ignore[method-assign, assignment]
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    tenant, file, point = sys.argv[1:4]
    service = build_service(load_settings())
    arm(service, point)
    service.upload(tenant, Path(file), accept_disclaimer=True, accepted_by="crash")
    raise SystemExit("the kill point was never reached")
