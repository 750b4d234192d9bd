"""The Goertzel classifier the demo relies on."""

from __future__ import annotations

import numpy as np

from ooma_moh.lab.tones import classify_windows


def test_classifies_tone_per_window_and_silence() -> None:
    rate = 8000
    t = np.arange(rate) / rate
    signal = np.concatenate([0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(rate // 2), 0.3 * np.sin(2 * np.pi * 660 * t)])
    pcm = (signal * 32767).astype("<i2").tobytes()
    windows = classify_windows(pcm, rate, [440, 660, 880])
    assert windows[:10] == [440] * 10
    assert windows[10:15] == [None] * 5
    assert windows[15:25] == [660] * 10
