"""``GET …/moh/audio``: what callers hear, as a 16 kHz WAV streamed from the rendition, with Range."""

from __future__ import annotations

import struct
from pathlib import Path

from aiohttp import web

from ..errors import NoTenantFile, StorageError
from ..model import MohSetting
from ..storage import Blobs, Catalog
from ..storage.blobs import sha256_file, storage_errors
from .auth import authorised_tenant
from .context import BLOBS, READER, ApiError, in_thread

#: (path, size, mtime) of renditions whose bytes were checked against their sha256 (bounded)
_CHECKED: dict[tuple[str, int, int], str] = {}


def _audio_source(reader: Catalog, blobs: Blobs, tenant_id: str) -> tuple[Path, str]:
    """(blocking) The tenant's 16 kHz rendition, checked as ``ooma-moh listen`` checks it: its
    bytes must have its sha256 (once per file version: the result is remembered), or
    ``StorageError`` ``blob_damaged``; and that sha256 (the audio's ETag)."""
    tenant = reader.get(tenant_id)
    if tenant is None or tenant.setting is not MohSetting.FILE:
        raise NoTenantFile("this tenant uses the default music: there is no uploaded file")
    sha = tenant.rendition("sln16").sha256
    path = blobs.locate(sha)
    with storage_errors("reading a stored file"):
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if _CHECKED.get(key) != sha:
            if sha256_file(path) != sha:
                raise StorageError(
                    "blob_damaged",
                    f"a stored file is damaged (sha256 {sha[:16]}… does not match its content):"
                    " restore the blob directory from a backup",
                )
            if len(_CHECKED) >= 1024:
                _CHECKED.clear()
            _CHECKED[key] = sha
    return path, sha


def wav_header(data_bytes: int, rate: int = 16000) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV holding ``data_bytes``."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> (first, last) inclusive; None: answer the
    whole file (no Range, or one RFC 9110 says to ignore: not a single byte range, not digits,
    ``a-b`` with b < a); ``ApiError`` 416 when it is valid but cannot be satisfied."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first_s, dash, last_s = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        return None  # not a single byte range: answer the whole file, as RFC 9110 allows
    if first_s == "":
        if not _digits(last_s):
            return None
        first, last = max(0, size - int(last_s)), size - 1
        unsatisfiable = int(last_s) == 0
    else:
        if not _digits(first_s) or (last_s and not _digits(last_s)):
            return None
        first, last = int(first_s), min(int(last_s), size - 1) if last_s else size - 1
        if last_s and int(last_s) < first:
            return None  # an invalid range-spec: the header is ignored
        unsatisfiable = first >= size
    if unsatisfiable:
        raise ApiError(
            416, "range_not_satisfiable", f"the audio has {size} bytes", {"Content-Range": f"bytes */{size}"}
        )
    return first, last


async def get_audio(request: web.Request) -> web.StreamResponse:
    """``GET /tenants/{tenant}/moh/audio``: what callers hear (16 kHz WAV), with Range support."""
    _, tenant = await authorised_tenant(request)
    source, sha = await in_thread(request, _audio_source, request.app[READER], request.app[BLOBS], tenant)
    etag = f'"{sha}"'  # strong: the WAV is the rendition's bytes behind a header made from their size
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers={"ETag": etag})
    data_bytes = source.stat().st_size
    header = wav_header(data_bytes)
    size = len(header) + data_bytes
    wanted = None
    if request.headers.get("If-Range", etag) == etag:  # a resumed download of another file: all of it
        wanted = parse_range(request.headers.get("Range"), size)
    first, last = wanted or (0, size - 1)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.content_type = "audio/wav"
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["ETag"] = etag
    response.content_length = last - first + 1
    if wanted:
        response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    await response.prepare(request)
    if first < len(header):
        await response.write(header[first : last + 1])
    # an immutable blob on local disk; reads of 64 KiB do not stall the loop
    with open(source, "rb") as fh:  # noqa: ASYNC230
        position = max(first, len(header)) - len(header)
        fh.seek(position)
        remaining = last + 1 - len(header) - position
        while remaining > 0:
            chunk = fh.read(min(65536, remaining))
            if not chunk:
                break
            await response.write(chunk)
            remaining -= len(chunk)
    await response.write_eof()
    return response
