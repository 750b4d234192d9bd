"""Receiving an upload: the multipart body streamed to a spool file, every byte bounded."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..logsafe import printable
from ..storage.blobs import storage_errors
from .context import INCOMING, ApiError

MULTIPART_SLACK = 64 * 1024  # part headers and the disclaimer fields around the audio
MAX_PARTS = 16  # the page sends 2 or 3


@dataclass(frozen=True)
class Spooled:
    """An upload received to a temporary file, with its form fields."""

    path: Path | None  # None: the form had no file (a urlencoded one)
    filename: str
    accepted: bool  # the ``disclaimer`` part said ``accepted``
    disclaimer_version: str | None  # the ``disclaimer_version`` part, if sent
    draft: str | None = None  # the ``draft`` part (saving a draft instead of sending a file)
    has_file: bool = True


async def spool_upload(request: web.Request, limit: int) -> Spooled:
    """Stream the multipart body's ``file`` part to a temporary file, at most ``limit`` bytes
    (never the whole body in memory), and read the small ``disclaimer`` fields."""
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise ApiError(413, "too_large", f"the file is larger than the limit of {limit:,} bytes")
    body = _CountedBody(request.content, limit + MULTIPART_SLACK)
    try:
        reader = MultipartReader(request.headers, cast(StreamReader, body))
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
            await form.read_all(reader, body, out)
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
    except ConnectionResetError:  # the client went away while its body was awaited: nobody to tell
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - as above
        raise ApiError(400, "client_gone", "the connection was lost before the upload arrived") from None
    except BaseException:  # too large, timed out (cancelled): leave nothing behind
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - as above
        raise
    return Spooled(path, form.filename, form.accepted, form.version, form.draft, form.seen_file)


def fields_only(form: Mapping[str, Any]) -> Spooled:
    """A urlencoded form (aiohttp bounds it with ``client_max_size``): its fields, no file."""

    def text(name: str) -> str | None:
        value = form.get(name)
        return value[:64].strip() or None if isinstance(value, str) else None

    return Spooled(
        None, "upload", form.get("disclaimer") == "accepted", text("disclaimer_version"), text("draft"), False
    )


class _CountedBody:
    """The request's body as the multipart reader reads it, every byte counted — preamble, part
    headers, parts, epilogue: past ``bound`` it is 413 (before, only the parts' contents were)."""

    def __init__(self, content: StreamReader, bound: int) -> None:
        self._content, self.bound, self.used = content, bound, 0

    def _count(self, data: bytes) -> bytes:
        self.used += len(data)
        if self.used > self.bound:
            raise ApiError(413, "too_large", f"the upload's body passes {self.bound:,} bytes")
        return data

    async def readline(self, *args: Any, **kwargs: Any) -> bytes:
        return self._count(await self._content.readline(*args, **kwargs))

    async def read(self, n: int = -1) -> bytes:
        return self._count(await self._content.read(n))

    def unread_data(self, data: bytes) -> None:
        self.used -= len(data)
        self._content.unread_data(data)

    def at_eof(self) -> bool:
        return self._content.at_eof()

    def __getattr__(self, name: str) -> Any:  # anything else the reader may ask, uncounted reads aside
        return getattr(self._content, name)


class _Form:
    """The parts of one upload's body as they arrive: the file written out, at most ``limit``
    bytes; every other part bounded together by :data:`MULTIPART_SLACK`, whatever its name."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.filename, self.accepted = "upload", False
        self.version: str | None = None
        self.draft: str | None = None
        self.size = self.other = 0
        self.seen_file = False
        self.parts = 0

    async def read_all(self, reader: MultipartReader, body: _CountedBody, out: BinaryIO) -> None:
        """Every part, then the epilogue (counted too); the file written out and flushed."""
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "malformed_multipart", "nested multipart is not accepted")
            self.parts += 1
            if self.parts > MAX_PARTS:
                raise ApiError(413, "too_large", f"the form has more than {MAX_PARTS} parts")
            await self.receive(part, out)
        while await body.read(65536):  # the epilogue after the last boundary
            pass
        with storage_errors("receiving the upload"):
            out.flush()
        if not self.seen_file and not self.draft:
            raise ApiError(
                400, "missing_file", "the form has no part named file (the audio to upload): nothing was stored"
            )

    async def receive(self, part: BodyPartReader, out: BinaryIO) -> None:
        if part.name == "disclaimer":
            self.accepted = await self._drain(part) == b"accepted"  # exactly: not a prefix, no padding
        elif part.name == "disclaimer_version":
            self.version = (await self._drain(part))[:64].decode(errors="replace").strip()
        elif part.name == "draft":
            self.draft = (await self._drain(part))[:64].decode(errors="replace").strip() or None
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
