"""``GET …/moh/audio`` and ``…/moh/waveform``, for the tenant's file and for its drafts: what
callers hear, as a WAV streamed from a published rendition (with Range), and its outline.

Which rendition, in order:

1. ``quality=wideband`` (the default): the 16 kHz signed-linear rendition, as it is;
2. ``quality=phone``: the 8 kHz μ-law rendition — the bytes Asterisk sends a G.711 caller —
   decoded to 16-bit PCM sample for sample (the G.711 table, no resampling);
3. anything else: 400 ``invalid_quality``.

A rendition's bytes are checked against their sha256 once per file version (``blob_damaged``
otherwise). The waveform is at most 2,000 (min, max) pairs of the 16 kHz rendition, −1..1,
remembered per rendition (:mod:`ooma_moh.pcm` makes both).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import NoSuchDraft, NoTenantFile, StorageError
from ..model import MohSetting
from ..pcm import QUALITIES, decode_ulaw, peaks, wav_header
from ..storage import Blobs, Catalog
from ..storage.blobs import sha256_file, storage_errors
from .auth import authorised_tenant
from .context import BLOBS, READER, WORKERS, ApiError, in_thread

#: (path, size, mtime) of renditions whose bytes were checked against their sha256 (bounded)
_CHECKED: dict[tuple[str, int, int], str] = {}
_WAVEFORMS: dict[str, dict[str, Any]] = {}


def _checked(blobs: Blobs, sha: str) -> Path:
    """(blocking) A local path of the blob, its bytes checked against ``sha`` (once per version)."""
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
    return path


def _current_rendition(reader: Catalog, blobs: Blobs, tenant_id: str, _draft: str, extension: str) -> tuple[Path, str]:
    """(blocking) The tenant's current rendition ``extension``: its checked path and sha256."""
    tenant = reader.get(tenant_id)
    if tenant is None or tenant.setting is not MohSetting.FILE:
        raise NoTenantFile("this tenant uses the default music: there is no uploaded file")
    sha = tenant.rendition(extension).sha256
    return _checked(blobs, sha), sha


def _draft_rendition(reader: Catalog, blobs: Blobs, tenant_id: str, draft_id: str, extension: str) -> tuple[Path, str]:
    """(blocking) The rendition ``extension`` of the tenant's live draft ``draft_id``."""
    found = reader.draft(tenant_id, draft_id, datetime.now(UTC))
    if found is None:
        raise NoSuchDraft("no such draft: it expired, was saved, or never existed")
    sha = found.rendition(extension).sha256
    return _checked(blobs, sha), sha


Finder = Callable[[Catalog, Blobs, str, str, str], tuple[Path, str]]


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


def quality_of(request: web.Request) -> tuple[str, int, bool]:
    """The rendition, WAV rate and whether to decode μ-law, for the request's ``quality``."""
    quality = request.query.get("quality", "wideband")
    if quality not in QUALITIES:
        raise ApiError(400, "invalid_quality", "quality must be phone or wideband")
    return QUALITIES[quality]


async def _serve(request: web.Request, find: Finder) -> web.StreamResponse:
    """The WAV of one rendition, with ETag, If-None-Match, Range and If-Range."""
    _, tenant = await authorised_tenant(request)
    extension, rate, ulaw = quality_of(request)
    draft = request.match_info.get("draft", "")
    source, sha = await in_thread(request, find, request.app[READER], request.app[BLOBS], tenant, draft, extension)
    etag = f'"{sha}"'  # strong: the WAV is the rendition's bytes behind a header made from their size
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers={"ETag": etag})
    scale = 2 if ulaw else 1  # bytes of PCM per byte of the rendition
    data_bytes = source.stat().st_size * scale
    header = wav_header(data_bytes, rate)
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
        position = max(first, len(header)) - len(header)  # in the WAV's data
        end = last + 1 - len(header)
        fh.seek(position // scale)
        skip = position % scale
        while position < end:
            chunk = fh.read(65536)
            if not chunk:
                break
            data = decode_ulaw(chunk) if ulaw else chunk
            data = data[skip : skip + end - position]
            skip = 0
            await response.write(data)
            position += len(data)
    await response.write_eof()
    return response


async def get_audio(request: web.Request) -> web.StreamResponse:
    """``GET /tenants/{tenant}/moh/audio[?quality=phone|wideband]``: what callers hear."""
    return await _serve(request, _current_rendition)


async def get_draft_audio(request: web.Request) -> web.StreamResponse:
    """``GET /tenants/{tenant}/moh/drafts/{draft}/audio[?quality=…]``: what callers would hear."""
    return await _serve(request, _draft_rendition)


def waveform(path: Path, sha: str) -> dict[str, Any]:
    """(blocking) The outline of a 16 kHz 16-bit rendition (:func:`~ooma_moh.pcm.peaks`)."""
    if sha in _WAVEFORMS:
        return _WAVEFORMS[sha]
    with storage_errors("reading a stored file"), open(path, "rb") as fh:
        samples = path.stat().st_size // 2
        body = {"duration_ms": samples * 1000 // 16000, "peaks": peaks(fh, samples)}
    if len(_WAVEFORMS) >= 64:
        _WAVEFORMS.clear()
    _WAVEFORMS[sha] = body
    return body


async def _waveform(request: web.Request, find: Finder) -> web.Response:
    _, tenant = await authorised_tenant(request)
    draft = request.match_info.get("draft", "")
    path, sha = await in_thread(request, find, request.app[READER], request.app[BLOBS], tenant, draft, "sln16")
    body = await in_thread(request, waveform, path, sha, pool=WORKERS)
    return web.json_response(body, headers={"ETag": f'"{sha}"'})


async def get_waveform(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/moh/waveform``: the outline of the tenant's current file."""
    return await _waveform(request, _current_rendition)


async def get_draft_waveform(request: web.Request) -> web.Response:
    """``GET /tenants/{tenant}/moh/drafts/{draft}/waveform``."""
    return await _waveform(request, _draft_rendition)
