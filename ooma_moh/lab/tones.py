"""Which of a few known tones is playing: Goertzel filters over 16-bit PCM, pure Python.

Used by the demo to prove that a caller heard the right class (each class plays its own tone),
without pulling numpy into the runtime dependencies.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence


def _power(samples: Sequence[float], rate: int, freq: float) -> float:
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s_prev = s_prev2 = 0.0
    for x in samples:
        s = x + coeff * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    return s_prev2 * s_prev2 + s_prev * s_prev - coeff * s_prev * s_prev2


def classify_windows(
    pcm: bytes, rate: int, candidates: Iterable[float], window_s: float = 0.1, silence_rms: float = 100.0
) -> list[float | None]:
    """For each window of s16le mono ``pcm``: the strongest of ``candidates``, or None if silent."""
    freqs = list(candidates)
    count = len(pcm) // 2
    samples = struct.unpack(f"<{count}h", pcm[: count * 2])
    step = max(1, int(rate * window_s))
    result: list[float | None] = []
    for start in range(0, count - step + 1, step):
        window = samples[start : start + step]
        rms = math.sqrt(sum(x * x for x in window) / step)
        if rms < silence_rms:
            result.append(None)
            continue
        result.append(max(freqs, key=lambda f: _power(window, rate, f)))
    return result
