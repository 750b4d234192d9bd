"""EBML by hand, for WebM/Matroska test files: elements with any declared size (the fields an
attacker controls), and a WebM rewritten the way a browser's MediaRecorder writes it."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from tests.audio import ffmpeg

MAGIC = bytes.fromhex("1A45DFA3")
SEGMENT, TRACKS, CLUSTER = "18538067", "1654AE6B", "1F43B675"
#: an 8-byte size with every value bit set: "unknown size" (live streams, MediaRecorder)
UNKNOWN = bytes.fromhex("01FFFFFFFFFFFFFF")
_CUES, _SEEK_HEAD, _INFO, _DURATION = 0x1C53BB6B, 0x114D9B74, 0x1549A966, 0x4489


def size(n: int, length: int = 0) -> bytes:
    """``n`` as an EBML size of ``length`` bytes (0: the shortest that holds it)."""
    length = length or next(i for i in range(1, 9) if n < (1 << (7 * i)) - 1)
    return (n | (1 << (7 * length))).to_bytes(length, "big")


def element(ident: str, data: bytes = b"", declared: bytes | None = None) -> bytes:
    """Element ``ident`` (hex) holding ``data``; ``declared`` replaces its true size."""
    return bytes.fromhex(ident) + (size(len(data)) if declared is None else declared) + data


def header(doctype: bytes = b"webm") -> bytes:
    """The EBML header of a WebM (or, with ``b"matroska"``, a Matroska) file."""
    fields = (("4286", b"\x01"), ("42F7", b"\x01"), ("42F2", b"\x04"), ("42F3", b"\x08"), ("4282", doctype))
    return element("1A45DFA3", b"".join(element(i, v) for i, v in (*fields, ("4287", b"\x04"), ("4285", b"\x02"))))


#: a TrackEntry's first fields: track 1, audio, Opus
OPUS_FIELDS = element("D7", b"\x01") + element("83", b"\x02") + element("86", b"A_OPUS")
#: a TrackEntry: those and 48 kHz stereo (no CodecPrivate: unplayable on its own)
OPUS_TRACK = element(
    "AE", OPUS_FIELDS + element("E1", element("9F", b"\x02") + element("B5", bytes.fromhex("40E7700000000000")))
)


def _read(data: bytes, at: int, marker: bool) -> tuple[int, int]:
    """(value, end) of the variable-length integer at ``at``: an ID keeps its length marker."""
    length = next(i for i in range(1, 9) if data[at] & (0x80 >> (i - 1)))
    value = int.from_bytes(data[at : at + length], "big")
    return (value if marker else value & ((1 << (7 * length)) - 1)), at + length


def _children(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(id, raw id + raw size, content) of each element in ``data``."""
    found, at = [], 0
    while at < len(data):
        ident, after_id = _read(data, at, True)
        length, start = _read(data, after_id, False)
        found.append((ident, data[at:start], data[start : start + length]))
        at = start + length
    return found


def as_media_recorder(webm: bytes) -> bytes:
    """``webm`` (as ffmpeg writes it) as Chrome's MediaRecorder writes one: the Segment and every
    Cluster of unknown size, no Duration, no Cues, no SeekHead."""
    _, after_id = _read(webm, 0, True)
    length, start = _read(webm, after_id, False)
    out = webm[: start + length]  # the EBML header
    _, after_id = _read(webm, start + length, True)  # the Segment
    length, start = _read(webm, after_id, False)
    out += bytes.fromhex(SEGMENT) + UNKNOWN
    for ident, raw, content in _children(webm[start : start + length]):
        if ident == int(CLUSTER, 16):
            out += bytes.fromhex(CLUSTER) + UNKNOWN + content
        elif ident == _INFO:
            kept = b"".join(r + c for i, r, c in _children(content) if i != _DURATION)
            out += bytes.fromhex("1549A966") + size(len(kept)) + kept
        elif ident not in (_CUES, _SEEK_HEAD):
            out += raw + content
    return out


# -- hostile and refused files (tests/integration/test_bad_input.py's BAD_UPLOADS) ---------------

Maker = Callable[[Path], Path]


def _written(name: str, data: bytes) -> Maker:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def written_by_ffmpeg(path: Path, *codec: str, source: str = "sine=f=440:d=3", fmt: str = "webm") -> Path:
    """``source`` (lavfi) encoded with ``codec`` into ``fmt`` at ``path``."""
    ffmpeg("-f", "lavfi", "-i", source, *codec, "-f", fmt, str(path))
    return path


def _cut(keep: int | None, recorder: bool = False) -> Maker:
    """A 3 s WebM/Opus cut to its first ``keep`` bytes (None: half); as MediaRecorder writes it if
    ``recorder`` (no duration: nothing says how long it should be)."""

    def make(tmp: Path) -> Path:
        data = written_by_ffmpeg(tmp / "whole.webm", "-c:a", "libopus").read_bytes()
        data = as_media_recorder(data) if recorder else data
        return _written("cut.webm", data[: len(data) // 2 if keep is None else keep])(tmp)

    return make


def _segment(body: bytes) -> Maker:
    """A WebM header, then a Segment of unknown size holding ``body``."""
    return _written("hostile.webm", header() + bytes.fromhex(SEGMENT) + UNKNOWN + body)


def _other(*codec: str, source: str = "sine=f=440:d=3", fmt: str = "matroska") -> Maker:
    return lambda tmp: written_by_ffmpeg(tmp / "other.webm", *codec, source=source, fmt=fmt)


_TRACKS = element(TRACKS, OPUS_TRACK)
_NESTED = bytes.fromhex(CLUSTER) + UNKNOWN + b"\xa0" + UNKNOWN  # a Cluster opening a BlockGroup, unclosed
#: case -> (maker, the refusal expected)
BAD_WEBMS: dict[str, tuple[Maker, str]] = {
    "webm header then garbage": (_written("x.webm", MAGIC + random.Random(8000).randbytes(8000)), "undecodable"),
    "webm cut inside its header": (_cut(300), "undecodable"),
    "webm cut in half": (_cut(None), "undecodable"),
    "MediaRecorder webm cut in half": (_cut(None, recorder=True), "undecodable"),
    "webm segment declaring 2^56 bytes, empty": (
        _written("big.webm", header() + bytes.fromhex(SEGMENT) + size((1 << 56) - 3, 8)),
        "undecodable",
    ),
    "webm track declaring a 200 MB CodecPrivate": (
        _segment(element(TRACKS, element("AE", OPUS_FIELDS + bytes.fromhex("63A2") + size(200_000_000)))),
        "undecodable",
    ),
    "webm cluster declaring 2^55 bytes": (
        _segment(_TRACKS + element(CLUSTER, element("E7", b"\x00"), size(1 << 55, 8))),
        "undecodable",
    ),
    "webm of 20,000 nested unknown-size clusters": (_segment(_TRACKS + _NESTED * 20_000), "too_short"),
    "webm of 20,000 tracks": (_segment(element(TRACKS, OPUS_TRACK * 20_000)), "undecodable"),
    "webm video, no audio": (_other("-c:v", "libvpx", source="testsrc=s=64x64:d=2", fmt="webm"), "no_audio"),
    "matroska with mp3 audio": (_other("-c:a", "libmp3lame"), "undecodable"),
    "matroska with pcm audio": (_other("-c:a", "pcm_s16le"), "undecodable"),
}
