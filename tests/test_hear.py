"""The HEAR API: attributes, shapes, millisecond timestamps, agreement with ``embed``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import audioembed.hear as hear
from audioembed import embed, frontend


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return hear.load_model(str(tiny_model_dir))


def sounds(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, int(seconds * hear.HearModel.sample_rate), generator=g)


def test_model_attributes(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 128


def test_empty_path_loads_the_default_model():
    from audioembed import registry

    default = hear.load_model("")
    entry = registry.get(registry.DEFAULT_MODEL)
    assert default.net.info["source"] == f"registry:{entry.name}"
    assert default.net.info["sha256"] == entry.sha256  # the bundled weights, checked on load
    assert default.scene_embedding_size == default.net.config.embedding_dim == 128


def test_scene_embeddings(model):
    audio = sounds(3, 2.3)
    out = hear.get_scene_embeddings(audio, model)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 128) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    ref = embed([a.numpy() for a in audio], sr=16000, model=model.net)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("seconds", [0.2, 1.0, 2.37])
def test_timestamp_embeddings(model, seconds):
    audio = sounds(2, seconds, seed=1)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    n = ts.shape[1]
    assert emb.shape == (2, n, 128) and ts.shape == (2, n)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, n))
    # Milliseconds, 50 ms apart from 0, covering the sound to its end.
    expected = torch.arange(n, dtype=torch.float32) * 50.0
    torch.testing.assert_close(ts, expected.expand(2, -1))
    assert seconds * 1000 - 50 < ts[0, -1] <= seconds * 1000 + 50
    # Sounds are independent: the second row equals embedding that sound alone.
    alone, _ = hear.get_timestamp_embeddings(audio[1:], model)
    torch.testing.assert_close(emb[1:], alone, atol=1e-5, rtol=0)


def test_timestamp_embeddings_are_the_padded_sounds_windows(model):
    audio = sounds(1, 1.5, seed=2)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    pad = np.zeros(hear.PAD_SAMPLES, np.float32)
    padded = np.concatenate([pad, audio[0].numpy(), pad])
    ref = embed(padded, sr=16000, model=model.net, hop=hear.TIMESTAMP_HOP_SECONDS, windows=True)
    np.testing.assert_allclose(emb[0].numpy(), ref.window_embeddings, atol=1e-5)
    shift = hear.PAD_SAMPLES / frontend.SAMPLE_RATE
    np.testing.assert_allclose(ts[0].numpy(), (ref.timestamps - shift) * 1000, atol=1e-3)


@pytest.mark.parametrize("bad", [torch.zeros(16000), torch.zeros(1, 1, 16000), torch.zeros(2, 0)])
def test_bad_audio_shapes(model, bad):
    with pytest.raises(ValueError):
        hear.get_scene_embeddings(bad, model)
    with pytest.raises(ValueError):
        hear.get_timestamp_embeddings(bad, model)
