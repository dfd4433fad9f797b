"""``precision=``: bf16 autocast of the torch network, its agreement with fp32, and its refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audioembed import embed, hear, precision
from audioembed.errors import InvalidArgumentError
from audioembed.shards import FINGERPRINT_KEY
from helpers_cli import cli

needs_native_bf16 = pytest.mark.skipif(not precision.cpu_has_native_bf16(),
                                       reason="this CPU lacks AVX512-BF16 and AMX")


@pytest.mark.slow  # the ResNet-50 over 18 recordings, three times
@needs_native_bf16
def test_bf16_agrees_with_fp32_on_spoken_digits(fsdd_recordings, one_thread):
    # The stated guarantee: cosine >= 0.999 to fp32, with the bundled default model, on
    # speakers and digits of FSDD; one clip per speaker and digit pair, every 5th digit.
    clips = [fsdd_recordings / f"{d}_{s}_0.wav" for d in (0, 5, 9)
             for s in ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")]
    fp32 = embed(clips, precision="fp32", windows=True)
    bf16 = embed(clips, precision="bf16", windows=True)
    assert bf16.embedding.dtype == np.float32 and bf16.embedding.shape == (len(clips), 128)
    cos = (fp32.embedding * bf16.embedding).sum(axis=1)
    assert cos.min() >= 0.999, cos
    # It did run in bf16: an fp32 run would agree to the last bits.
    assert np.abs(fp32.embedding - bf16.embedding).max() > 1e-4
    for win in bf16.window_embeddings:  # re-normalised in float32 after the cast back
        assert win.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(win, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embed(clips, precision="bf16"), bf16.embedding)  # deterministic


def test_auto_is_fp32_on_the_cpu(tiny_model_dir, make_wav):
    wav = make_wav("a.wav", seconds=2.0)
    np.testing.assert_array_equal(embed(wav, model=tiny_model_dir),
                                  embed(wav, model=tiny_model_dir, precision="fp32"))
    assert precision.precision_on("auto", "cpu") == "fp32"


def test_auto_is_bf16_on_cuda_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: True)
    assert precision.precision_on("auto", "cuda:0") == "bf16"
    assert precision.precision_on("fp32", "cuda:0") == "fp32"
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: False)
    assert precision.precision_on("auto", "cuda") == "fp32"
    with pytest.raises(InvalidArgumentError, match="not available on cuda"):
        precision.precision_on("bf16", "cuda")


@needs_native_bf16
def test_pooled_layer_is_float32_and_not_normalised(tiny_model_dir, make_wav):
    wav = make_wav("a.wav", seconds=3.0)
    fp32 = embed(wav, model=tiny_model_dir, layer="pooled", precision="fp32", windows=True)
    bf16 = embed(wav, model=tiny_model_dir, layer="pooled", precision="bf16", windows=True)
    assert bf16.window_embeddings.dtype == np.float32
    assert bf16.window_embeddings.shape == fp32.window_embeddings.shape == (3, 256)
    np.testing.assert_allclose(bf16.window_embeddings, fp32.window_embeddings, rtol=0.05, atol=0.02)
    norms = np.linalg.norm(bf16.window_embeddings, axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(fp32.window_embeddings, axis=1), rtol=0.02)
    assert not np.allclose(norms, 1.0, atol=1e-3)


def test_bf16_refused_with_the_onnx_backends(tiny_model_dir, make_wav):
    wav = make_wav("a.wav")
    for backend in ("onnx", "onnx-int8"):
        with pytest.raises(InvalidArgumentError, match="torch backend only") as err:
            embed(wav, model=tiny_model_dir, backend=backend, precision="bf16")
        assert "\n" not in str(err.value)


def test_bf16_refused_on_a_cpu_without_native_bf16(tiny_model_dir, make_wav, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(InvalidArgumentError, match="lacks AVX512-BF16 and AMX") as err:
        embed(make_wav("a.wav"), model=tiny_model_dir, precision="bf16")
    assert "\n" not in str(err.value)
    with pytest.raises(InvalidArgumentError, match="lacks AVX512-BF16"):
        hear.load_model(str(tiny_model_dir), precision="bf16")


def test_unknown_precision_refused(tiny_model_dir, make_wav):
    with pytest.raises(InvalidArgumentError, match="precision must be one of auto, fp32, bf16"):
        embed(make_wav("a.wav"), model=tiny_model_dir, precision="fp16")


def test_cli_refuses_bf16_with_onnx_in_one_line(tiny_model_dir, make_wav, tmp_path):
    res = cli("extract", make_wav("a.wav"), "-o", tmp_path / "e.npy", "--model", tiny_model_dir, "--backend",
              "onnx", "--precision", "bf16", "-q")
    assert res.exit_code == 2
    assert "--precision: precision=\"bf16\" runs with the torch backend only" in res.output
    assert not (tmp_path / "e.npy").exists()


@needs_native_bf16
def test_cli_bf16_matches_the_api_and_marks_its_shards(tiny_model_dir, make_wav, tmp_path):
    wav = make_wav("a.wav", seconds=2.0)
    res = cli("extract", wav, "-o", tmp_path / "e.npy", "--model", tiny_model_dir,
              "--precision", "bf16", "-q")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"),
                                  embed(wav, model=tiny_model_dir, precision="bf16"))
    prints = {}
    for p in ("fp32", "auto", "bf16"):
        out = tmp_path / p / "all.npz"
        res = cli("extract", wav, "-o", out, "--model", tiny_model_dir, "--precision", p,
                  "--shard", "0/1", "-q")
        assert res.exit_code == 0, res.output
        with np.load(out.with_name("all.shard-0-of-1.npz")) as z:
            prints[p] = str(z[FINGERPRINT_KEY])
    # auto runs fp32 on the CPU: the same run; bf16 shards cannot be merged with fp32 ones.
    assert prints["fp32"] == prints["auto"] != prints["bf16"]


@needs_native_bf16
def test_hear_bf16_scene_embeddings_match_embed(tiny_model_dir):
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 32_000)).astype(np.float32) * 0.1)
    model = hear.load_model(str(tiny_model_dir), precision="bf16")
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32
    ref = embed(list(audio.numpy()), sr=16_000, model=tiny_model_dir, precision="bf16")
    np.testing.assert_allclose(scene.numpy(), ref, atol=1e-6)
