"""int8 inference: export, load, the onnx-int8 backend, and agreement with fp32 on real audio."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from audioembed import embed, load_model  # noqa: E402
from audioembed.onnx_backend import OnnxModel  # noqa: E402
from audioembed.quantize import agreement, calibration_windows, export_int8, synthetic_audio  # noqa: E402
from helpers_cli import cli  # noqa: E402


def test_calibration_set_is_fixed_and_varied():
    a, b = calibration_windows(n=40), calibration_windows(n=40)
    assert a.shape == (40, 96, 64) and torch.equal(a, b)
    assert not torch.equal(calibration_windows(n=40, seed=1), a)
    levels = [20 * np.log10(np.abs(x).max()) for x in synthetic_audio()]
    assert min(levels) < -30 and max(levels) > -10


def test_int8_export_loads_and_agrees_with_fp32(tmp_path, tiny_model_dir):
    net = load_model(tiny_model_dir)
    agree = export_int8(net, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 0
    runner = OnnxModel(tmp_path / "m.onnx")
    ops = {n.op_type for n in __import__("onnx").load(str(tmp_path / "m.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = calibration_windows(n=16, seed=2)
    got = agreement(net, runner, x)
    assert got["mean_cosine"] > 0.95 and agree["mean_cosine"] > 0.95
    # The backend runs the file as it is, through the same API as fp32.
    wav = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    e8 = embed(wav, 16000, model=str(tmp_path / "m.onnx"), backend="onnx-int8")
    e32 = embed(wav, 16000, model=tiny_model_dir)
    assert e8.shape == e32.shape == (128,) and float(e8 @ e32) > 0.95


def test_int8_export_leaves_a_module_in_training_mode_as_it_was(tmp_path, tiny_model_dir):
    net = load_model(tiny_model_dir).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    agree = export_int8(net, tmp_path / "m.onnx")
    assert net.training and all(m.training for m in net.modules()), "export_int8 changed the module's mode"
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BatchNorm statistics too
    # The agreement is still that of the eval-mode network with its quantized export.
    assert agree["mean_cosine"] > 0.95


@pytest.mark.slow  # the ResNet-50 quantized and run over 20 recordings, twice
def test_default_model_int8_agrees_with_fp32_on_real_audio(fsdd_recordings):
    files = sorted(str(p) for p in fsdd_recordings.glob("*.wav"))[::150]
    e32 = embed(files)
    e8 = embed(files, backend="onnx-int8")  # quantized in memory, once per process
    cos = (e32 * e8).sum(1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e8, axis=1))
    assert cos.mean() >= 0.98, cos


def test_onnx_int8_refuses_a_file_that_is_not_quantized(tmp_path, tiny_model_dir):
    from audioembed.errors import InvalidArgumentError
    from audioembed.onnx_backend import export
    from audioembed.quantize import is_quantized

    fp32 = export(load_model(tiny_model_dir), tmp_path / "fp32.onnx")
    assert not is_quantized(fp32)
    wav = np.random.default_rng(3).standard_normal(24000).astype(np.float32) * 0.1
    with pytest.raises(InvalidArgumentError, match='backend="onnx-int8" needs a quantized ONNX file'):
        embed(wav, 16000, model=fp32, backend="onnx-int8")
    assert embed(wav, 16000, model=fp32).shape == (128,)  # the same file runs as fp32 onnx
    clip = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(clip, wav, 16000)
    res = cli("extract", clip, "-o", tmp_path / "a.npy", "--model", fp32, "--backend", "onnx-int8")
    assert res.exit_code == 2 and "needs a quantized ONNX file" in res.output
    assert not (tmp_path / "a.npy").exists()
