"""layer="pooled": the 2048-d pooled features per window, mean and max per segment, through
embed(), extract and the HEAR API; the default embedding is unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audioembed import embed, hear, load_model
from audioembed.errors import InvalidArgumentError
from helpers_cli import cli


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def test_pooled_shapes_and_segment_definition(tiny_model_dir):
    net = load_model(tiny_model_dir)
    width = net.fc.in_features  # 8 * 4 * base_width: 256 for the tiny model, 2048 for ResNet-50
    one = embed(_audio(3.0), 16000, model=tiny_model_dir, layer="pooled", windows=True)
    assert one.embedding.shape == (2 * width,) and one.window_embeddings.shape == (3, width)
    np.testing.assert_allclose(one.embedding[:width], one.window_embeddings.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one.embedding[width:], one.window_embeddings.max(0))
    # A single window: no squeeze() slip, still (2 * width,).
    assert embed(_audio(0.5), 16000, model=tiny_model_dir, layer="pooled").shape == (2 * width,)
    many = embed([_audio(1.0), _audio(2.0, 1)], 16000, model=tiny_model_dir, layer="pooled")
    assert many.shape == (2, 2 * width)
    # The windows are the network's own pooled features, not a post-hoc transform.
    with torch.inference_mode():
        from audioembed.frontend import log_mel_windows
        w, _ = log_mel_windows(torch.from_numpy(_audio(3.0)))
        direct = net.pooled(w.unsqueeze(1)).numpy()
    np.testing.assert_allclose(one.window_embeddings, direct, rtol=1e-4, atol=1e-5)
    # The default is the paper's unit-norm embedding, as before.
    e = embed(_audio(3.0), 16000, model=tiny_model_dir)
    assert e.shape == (128,) and abs(np.linalg.norm(e) - 1) < 1e-5


def test_pooled_is_refused_where_it_cannot_be_computed(tiny_model_dir):
    with pytest.raises(InvalidArgumentError, match="layer must be"):
        embed(_audio(1.0), 16000, model=tiny_model_dir, layer="fc7")


def test_hear_pooled_layer(tiny_model_dir):
    m = hear.load_model(str(tiny_model_dir), layer="pooled")
    width = m.net.fc.in_features
    audio = torch.from_numpy(np.stack([_audio(2.0), _audio(2.0, 1)]))
    scene = hear.get_scene_embeddings(audio, m)
    ts, _ = hear.get_timestamp_embeddings(audio, m)
    assert scene.shape == (2, 2 * width) == (2, m.scene_embedding_size)
    assert ts.shape[2] == width == m.timestamp_embedding_size
    ref = embed([a.numpy() for a in audio], 16000, model=tiny_model_dir, layer="pooled")
    np.testing.assert_allclose(scene.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_extract_layer_pooled_npz(tmp_path, tiny_model_dir):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", _audio(2.0), 16000)
    res = cli("extract", tmp_path / "a.wav", "-o", tmp_path / "o.npz", "--model", tiny_model_dir, "--layer",
              "pooled", "-q")
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "o.npz")
    assert z["embeddings"].shape == (1, 2 * load_model(tiny_model_dir).fc.in_features)


def test_evaluator_layer_and_backend_are_recorded_and_keyed(tmp_path, tiny_model_dir):
    from training.evaluation.datasets import LabeledDataset
    from training.evaluation.features import embed_dataset
    import soundfile as sf

    paths = []
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", _audio(1.5, i), 16000)
        paths.append(str(tmp_path / f"{i}.wav"))
    ds = LabeledDataset("toy", paths, [("a",), ("b",), ("a",)])
    plain = embed_dataset(ds, str(tiny_model_dir), cache_dir=tmp_path / "c", log=lambda s: None)
    pooled = embed_dataset(ds, str(tiny_model_dir), cache_dir=tmp_path / "c", log=lambda s: None, layer="pooled")
    assert plain.emb.shape[1] == 128 and pooled.emb.shape[1] == load_model(tiny_model_dir).fc.in_features
    assert "layer" not in plain.model and pooled.model["layer"] == "pooled"
    assert plain.cache_path != pooled.cache_path  # never served the other readout from cache


def test_onnx_export_with_both_outputs(tmp_path, tiny_model_dir):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    res = cli("export-onnx", tmp_path / "m.onnx", "--model", tiny_model_dir, "--pooled")
    assert res.exit_code == 0, res.output
    x = _audio(2.0)
    for layer in ("embedding", "pooled"):
        got = embed(x, 16000, model=str(tmp_path / "m.onnx"), backend="onnx", layer=layer)
        want = embed(x, 16000, model=tiny_model_dir, layer=layer)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    # A graph exported without it says how to get it.
    cli("export-onnx", tmp_path / "plain.onnx", "--model", tiny_model_dir)
    with pytest.raises(Exception, match="--pooled"):
        embed(x, 16000, model=str(tmp_path / "plain.onnx"), backend="onnx", layer="pooled")
