"""Receiving an upload's bytes: the file opened (a path checked first), copied to the scratch
area within a size limit while its sha256 is taken, and its name cleaned for the record. A
failure reading the uploader's stream is the upload's (``UploadRejected``); one writing our disk
is the server's (``StorageError``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UploadRejected
from .rejections import Rejection
from .storage.blobs import storage_errors

MAX_NAME_CHARS = 255
CHUNK = 1 << 16


def _read(source: BinaryIO, size: int) -> bytes:
    """Read from the uploader's stream: a failure there is the upload's, not the server's."""
    try:
        return source.read(size)
    except OSError as exc:
        raise UploadRejected(Rejection.UNREADABLE, f"the upload could not be read: {exc.strerror}") from None


def clean_original_name(name: str) -> str:
    """The uploaded file's name as a record: base name only, no control characters, bounded."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if ch.isprintable())
    return printable[:MAX_NAME_CHARS] or "upload"


def stage(source: BinaryIO, target: Path, limit: int) -> tuple[int, str]:
    """Copy at most ``limit`` bytes of ``source`` to ``target``; return size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with storage_errors("receiving the upload"), open(target, "wb") as out:
        while chunk := _read(source, min(CHUNK, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise UploadRejected(Rejection.TOO_LARGE, f"the file is larger than the limit of {limit:,} bytes")
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise UploadRejected(Rejection.EMPTY, "the file is empty")
    return size, digest.hexdigest()


@contextlib.contextmanager
def opened(source: Path | BinaryIO, max_bytes: int) -> Iterator[tuple[BinaryIO, str]]:
    """The upload as a stream, and the name to record if none is given; a path is checked (a
    readable file of at most ``max_bytes``) before anything is read."""
    if not isinstance(source, (str, os.PathLike)):
        yield source, "upload"
        return
    path = Path(source)
    try:
        if not path.is_file():
            raise UploadRejected(Rejection.NOT_A_FILE, "the upload is not a readable file")
        if path.stat().st_size > max_bytes:
            raise UploadRejected(Rejection.TOO_LARGE, f"the file is larger than the limit of {max_bytes:,} bytes")
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below; the try covers only the opening
    except OSError as exc:
        raise UploadRejected(Rejection.NOT_A_FILE, f"the upload cannot be read: {exc.strerror}") from None
    with fh:
        yield fh, path.name
