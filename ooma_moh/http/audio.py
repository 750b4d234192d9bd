"""``GET …/moh/audio``: what callers hear, as a 16 kHz WAV streamed from the rendition, with Range."""

from __future__ import annotations

import struct
from pathlib import Path

from aiohttp import web

from ..errors import NoTenantFile
from ..model import MohSetting
from ..storage import Blobs, Catalog
from .auth import authorised_tenant
from .context import BLOBS, READER, ApiError, in_thread


def _audio_source(reader: Catalog, blobs: Blobs, tenant_id: str) -> Path:
    tenant = reader.get(tenant_id)
    if tenant is None or tenant.setting is not MohSetting.FILE:
        raise NoTenantFile("this tenant uses the default music: there is no uploaded file")
    return blobs.locate(tenant.rendition("sln16").sha256)


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


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> (first, last) inclusive; None: whole file;
    ``ApiError`` 416 when it cannot be satisfied."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first_s, dash, last_s = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        return None  # not a single byte range: answer the whole file, as RFC 9110 allows
    try:
        if first_s == "":
            first, last = max(0, size - int(last_s)), size - 1
        else:
            first, last = int(first_s), min(int(last_s), size - 1) if last_s else size - 1
    except ValueError:
        return None
    if first > last or first >= size:
        raise ApiError(
            416, "range_not_satisfiable", f"the audio has {size} bytes", {"Content-Range": f"bytes */{size}"}
        )
    return first, last


async def get_audio(request: web.Request) -> web.StreamResponse:
    """``GET /tenants/{tenant}/moh/audio``: what callers hear (16 kHz WAV), with Range support."""
    _, tenant = await authorised_tenant(request)
    source = await in_thread(request, _audio_source, request.app[READER], request.app[BLOBS], tenant)
    data_bytes = source.stat().st_size
    header = wav_header(data_bytes)
    size = len(header) + data_bytes
    wanted = parse_range(request.headers.get("Range"), size)
    first, last = wanted or (0, size - 1)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.content_type = "audio/wav"
    response.headers["Accept-Ranges"] = "bytes"
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
