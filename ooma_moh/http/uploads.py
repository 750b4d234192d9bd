"""Receiving an upload: the multipart body streamed to a spool file, every byte bounded."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..logsafe import printable
from ..storage.blobs import storage_errors
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
    except (AssertionError, ValueError, KeyError, HttpProcessingError, RequestPayloadError) as exc:
        if isinstance(exc, RequestPayloadError):
            request.content.feed_eof()  # as below
        raise ApiError(400, "malformed_multipart", f"the body is not multipart/form-data ({exc})") from None
    with storage_errors("receiving the upload"):  # a full disk is 507, not a 500
        fd, name = tempfile.mkstemp(dir=request.app[INCOMING])
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            form = _Form(limit)
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "malformed_multipart", "nested multipart is not accepted")
                await form.receive(part, out)
            with storage_errors("receiving the upload"):
                out.flush()
            if not form.seen_file:
                raise ApiError(
                    400, "missing_file", "the form has no part named file (the audio to upload): nothing was stored"
                )
    except (ValueError, AssertionError, HttpProcessingError, RequestPayloadError) as exc:
        # the client's bytes: not multipart, not the encoding it said (a false gzip), cut short
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - one spool file's unlink, microseconds
        if isinstance(exc, RequestPayloadError):
            # the rest cannot be decoded either: aiohttp must not read it after the answer (its
            # "lingering" read would raise the same error and log it as unhandled); the answer
            # closes the connection (put_moh)
            request.content.feed_eof()
        raise ApiError(
            400,
            "malformed_multipart",
            "the multipart body is malformed: " + printable(getattr(exc, "message", None) or exc, 80),
        ) from None
    except BaseException:  # too large, timed out (cancelled), client gone: leave nothing behind
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - as above
        raise
    return Spooled(path, form.filename, form.accepted, form.version)


class _Form:
    """The parts of one upload's body as they arrive: the file written out, at most ``limit``
    bytes; every other part bounded together by :data:`MULTIPART_SLACK`, whatever its name."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.filename, self.accepted = "upload", False
        self.version: str | None = None
        self.size = self.other = 0
        self.seen_file = False

    async def receive(self, part: BodyPartReader, out: BinaryIO) -> None:
        if part.name == "disclaimer":
            self.accepted = await self._drain(part) == b"accepted"  # exactly: not a prefix, no padding
        elif part.name == "disclaimer_version":
            self.version = (await self._drain(part))[:64].decode(errors="replace").strip()
        elif part.name == "file":
            await self._file(part, out)
        else:
            await self._drain(part)

    async def _file(self, part: BodyPartReader, out: BinaryIO) -> None:
        if self.seen_file:
            raise ApiError(400, "malformed_multipart", "one file per upload: the body has two file parts")
        self.seen_file = True
        self.filename = part.filename or "upload"
        while chunk := await part.read_chunk(64 * 1024):
            self.size += len(chunk)
            if self.size > self.limit:
                raise ApiError(413, "too_large", f"the file is larger than the limit of {self.limit:,} bytes")
            with storage_errors("receiving the upload"):
                out.write(chunk)

    async def _drain(self, part: BodyPartReader) -> bytes:
        head = b""
        while chunk := await part.read_chunk(8192):
            self.other += len(chunk)
            if self.other > MULTIPART_SLACK:
                raise ApiError(413, "too_large", f"the form fields besides the file pass {MULTIPART_SLACK:,} bytes")
            head = (head + chunk)[:256]
        return head
