"""Array and tensor inputs of every sample type: unsigned PCM is offset, bfloat16 is widened."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audioembed import embed
from audioembed.audio_io import as_waveform
from audioembed.errors import AudioError, InvalidArgumentError

SR = 16_000


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.5 * np.sin(2 * np.pi * 440 * t)


@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 16)])
def test_unsigned_arrays_are_offset_pcm(dtype, bits, tiny_model_dir):
    half = 2 ** (bits - 1)
    pcm = np.round(_tone() * (half - 1) + half).astype(dtype)
    want = ((pcm.astype(np.float64) - half) / half).astype(np.float32)
    np.testing.assert_array_equal(as_waveform(pcm, SR), want)
    assert as_waveform(np.full(10, half, dtype), SR).tolist() == [0.0] * 10  # mid-code is silence
    got = embed(pcm, SR, model=tiny_model_dir)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, embed(want, SR, model=tiny_model_dir))


def test_a_bfloat16_tensor_embeds_as_its_float32_values(tiny_model_dir):
    x = torch.from_numpy(_tone()).to(torch.bfloat16)
    np.testing.assert_array_equal(embed(x, SR, model=tiny_model_dir),
                                  embed(x.float(), SR, model=tiny_model_dir))


def test_a_generator_and_an_unsupported_dtype_get_a_clear_message(tiny_model_dir):
    with pytest.raises(InvalidArgumentError, match=r"generator.*list\(\.\.\.\)"):
        embed((a for a in [_tone()]), SR, model=tiny_model_dir)
    with pytest.raises(AudioError, match="unsupported sample dtype bool"):
        embed(np.ones(SR, bool), SR, model=tiny_model_dir)
