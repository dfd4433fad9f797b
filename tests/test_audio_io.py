"""Decoding: integer PCM read natively and scaled here equals libsndfile's float conversion."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audioembed.audio_io import AudioSource, to_mono


def _write(path, subtype, fmt, channels, rng):
    x = rng.uniform(-1, 1, size=(9_001, channels)).astype(np.float32)
    x[:2] = [[-1.0] * channels, [1.0] * channels]  # the integer extremes
    sf.write(path, x, 22_050, subtype=subtype, format=fmt)
    with sf.SoundFile(path) as f:
        return to_mono(f.read(dtype="float32", always_2d=True).T)


@pytest.mark.parametrize("subtype,fmt", [("PCM_16", "WAV"), ("PCM_16", "FLAC"), ("PCM_16", "AIFF"),
                                         ("PCM_16", "W64"), ("PCM_32", "WAV"), ("PCM_24", "WAV"),
                                         ("FLOAT", "WAV")])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_blocks_equal_libsndfile_float_conversion_to_the_bit(tmp_path, subtype, fmt, channels):
    path = tmp_path / f"x.{fmt.lower()}"
    expected = _write(path, subtype, fmt, channels, np.random.default_rng(channels))
    for frames in (-1, 1_000, 4_096):
        with AudioSource(path) as src:
            blocks = list(src.blocks(frames))
        assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
        got = np.concatenate(blocks)
        assert np.array_equal(got, expected), (subtype, fmt, channels, frames)
    assert expected.min() == -1.0  # the most negative integer maps to -1 exactly


def test_native_read_keeps_cancelled_channels_distinct_from_silence(tmp_path):
    x = np.zeros((4_000, 2), np.float32)
    x[:, 0], x[:, 1] = 0.25, -0.25
    sf.write(tmp_path / "anti.wav", x, 16_000, subtype="PCM_16")
    with AudioSource(tmp_path / "anti.wav") as src:
        mono = np.concatenate(list(src.blocks(1_000)))
    assert not mono.any() and src.channels_nonzero
