"""Plain 16-bit PCM, no process run: G.711 μ-law decoding, WAV headers, and a waveform's peaks.

What an admin hears and sees of a rendition (``GET …/audio``, ``…/waveform``, ``ooma-moh
listen``) is made here, from the rendition's bytes:

- ``phone`` quality is the 8 kHz μ-law rendition — the bytes Asterisk sends a G.711 caller —
  decoded sample for sample with the G.711 table (no resampling, no filtering);
- ``wideband`` is the 16 kHz signed-linear rendition as it is.
"""

from __future__ import annotations

import struct
import warnings
from typing import BinaryIO

with warnings.catch_warnings():  # deprecated in 3.11-3.12 (audioop-lts on 3.13): pydub needs it anyway
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

#: quality -> (rendition, sample rate, whether its bytes are μ-law to decode)
QUALITIES: dict[str, tuple[str, int, bool]] = {"wideband": ("sln16", 16000, False), "phone": ("ulaw", 8000, True)}
MAX_PEAKS = 2000


def _ulaw_tables() -> tuple[bytes, bytes]:
    """Low and high bytes of the 16-bit value of each μ-law byte (ITU-T G.711), so that a whole
    chunk decodes with two ``bytes.translate`` calls."""
    low, high = bytearray(256), bytearray(256)
    for code in range(256):
        value = ~code & 0xFF
        magnitude = (((value & 0x0F) << 3) + 0x84) << ((value & 0x70) >> 4)
        sample = (0x84 - magnitude) if value & 0x80 else (magnitude - 0x84)
        low[code], high[code] = struct.pack("<h", sample)
    return bytes(low), bytes(high)


ULAW_LOW, ULAW_HIGH = _ulaw_tables()


def decode_ulaw(data: bytes) -> bytes:
    """μ-law bytes as 16-bit little-endian PCM."""
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(ULAW_LOW)
    out[1::2] = data.translate(ULAW_HIGH)
    return bytes(out)


def wav_header(data_bytes: int, rate: int = 16000, *, float32: bool = False) -> bytes:
    """The 44-byte header of a mono WAV holding ``data_bytes``: 16-bit PCM, or 32-bit IEEE float."""
    tag, width = (3, 4) if float32 else (1, 2)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, tag, 1, rate, rate * width, width, 8 * width)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def as_wav(rendition: bytes, quality: str) -> bytes:
    """A whole rendition of ``quality`` as a WAV file's bytes."""
    _, rate, ulaw = QUALITIES[quality]
    pcm = decode_ulaw(rendition) if ulaw else rendition
    return wav_header(len(pcm), rate) + pcm


def peaks(source: BinaryIO, samples: int, most: int = MAX_PEAKS) -> list[list[float]]:
    """(min, max) of each of at most ``most`` equal stretches of ``samples`` 16-bit samples read
    from ``source``, −1..1 — one stretch read at a time (a 30-minute rendition is 58 MB)."""
    buckets = min(most, samples)
    found = []
    for n in range(buckets):
        count = (n + 1) * samples // buckets - n * samples // buckets
        low, high = audioop.minmax(source.read(2 * count), 2)
        found.append([round(low / 32768, 4), round(high / 32767, 4)])
    return found
