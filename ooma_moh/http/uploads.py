"""Receiving an upload: the multipart body streamed to a spool file, every byte bounded."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..logsafe import printable
from .context import INCOMING, ApiError

MULTIPART_SLACK = 64 * 1024  # part headers and the disclaimer fields around the audio


@dataclass(frozen=True)
class Spooled:
    """An upload received to a temporary file, with its form fields."""

    path: Path
    filename: str
    accepted: bool  # the ``disclaimer`` part said ``accepted``
    disclaimer_version: str | None  # the ``disclaimer_version`` part, if sent


async def spool_upload(request: web.Request, limit: int) -> Spooled:
    """Stream the multipart body's ``file`` part to a temporary file, at most ``limit`` bytes
    (never the whole body in memory), and read the small ``disclaimer`` fields."""
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise ApiError(413, "too_large", f"the file is larger than the limit of {limit:,} bytes")
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError, HttpProcessingError) as exc:
        raise ApiError(400, "malformed_multipart", f"the body is not multipart/form-data ({exc})") from None
    fd, name = tempfile.mkstemp(dir=request.app[INCOMING])
    path, filename, accepted, version, size = Path(name), "upload", False, None, 0
    other = 0  # bytes of every part but the audio: bounded too, whatever their names
    seen_file = False

    async def drain(part: BodyPartReader) -> bytes:
        nonlocal other
        head = b""
        while chunk := await part.read_chunk(8192):
            other += len(chunk)
            if other > MULTIPART_SLACK:
                raise ApiError(413, "too_large", f"the form fields besides the file pass {MULTIPART_SLACK:,} bytes")
            head = (head + chunk)[:256]
        return head

    try:
        with os.fdopen(fd, "wb") as out:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "malformed_multipart", "nested multipart is not accepted")
                if part.name in ("disclaimer", "disclaimer_version"):
                    value = (await drain(part))[:64].decode(errors="replace").strip()
                    if part.name == "disclaimer":
                        accepted = value == "accepted"
                    else:
                        version = value
                elif part.name == "file":
                    if seen_file:
                        raise ApiError(400, "malformed_multipart", "one file per upload: the body has two file parts")
                    seen_file = True
                    filename = part.filename or "upload"
                    while chunk := await part.read_chunk(64 * 1024):
                        size += len(chunk)
                        if size > limit:
                            raise ApiError(413, "too_large", f"the file is larger than the limit of {limit:,} bytes")
                        out.write(chunk)
                else:
                    await drain(part)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        path.unlink(missing_ok=True)
        raise ApiError(
            400,
            "malformed_multipart",
            "the multipart body is malformed: " + printable(getattr(exc, "message", None) or exc, 80),
        ) from None
    except BaseException:  # too large, timed out (cancelled), client gone: leave nothing behind
        path.unlink(missing_ok=True)
        raise
    return Spooled(path, filename, accepted, version)
