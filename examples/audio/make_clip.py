"""Synthesizes ``chime_and_knocks.wav``, the quick-start clip (CC0; see README.md here).

    python examples/audio/make_clip.py [OUT.wav]

2.5 s, 16 kHz mono, 16-bit: a chime (decaying inharmonic partials), three knocks (short
resonant noise bursts) and a rising whistle. Deterministic: the same bytes every run
(tests/test_examples.py regenerates it and compares).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000
SECONDS = 2.5


def clip() -> np.ndarray:
    t = np.arange(int(SR * SECONDS)) / SR
    out = np.zeros_like(t)
    # A chime at 0 s: partials of a struck bar (ratios 1, 2.76, 5.40), each decaying.
    for ratio, amp, decay in [(1.0, 0.5, 1.2), (2.76, 0.3, 2.5), (5.40, 0.15, 4.0)]:
        out += amp * np.sin(2 * np.pi * 660 * ratio * t) * np.exp(-decay * t)
    # Three knocks from 1.0 s: noise through a decaying 180 Hz resonance.
    rng = np.random.default_rng(13)
    for start in (1.0, 1.25, 1.5):
        n = int(0.08 * SR)
        k = np.arange(n) / SR
        burst = rng.standard_normal(n) * np.exp(-k * 60) + np.sin(2 * np.pi * 180 * k) * np.exp(-k * 40)
        i = int(start * SR)
        out[i:i + n] += 0.6 * burst / np.abs(burst).max()
    # A whistle rising from 1.8 s to the end, 1.5 to 3 kHz, faded in and out.
    w = (t >= 1.8) & (t < SECONDS)
    tw = t[w] - 1.8
    f0, f1, dur = 1500.0, 3000.0, SECONDS - 1.8
    phase = 2 * np.pi * (f0 * tw + (f1 - f0) * tw ** 2 / (2 * dur))
    out[w] += 0.25 * np.sin(phase) * np.sin(np.pi * tw / dur)
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


def write(path: Path) -> Path:
    sf.write(path, clip(), SR, subtype="PCM_16")
    return path


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("chime_and_knocks.wav"))
