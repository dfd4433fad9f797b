"""int8 inference: the network statically quantized for onnxruntime.

fp32 ResNet-50 on CPU is bounded by its ~1 GFLOP per window; 8-bit integer kernels (VNNI on
AVX-512 machines, AVX2 elsewhere) do the same work in fewer bits. The export is onnxruntime's
static quantization in QDQ format: weights int8 per output channel, activations uint8 per
tensor, with ranges calibrated (min/max) on log-mel windows.

Calibration windows: a folder of the user's own audio (``--calibrate DIR``), or by default a
fixed synthetic set made here from code (seeded; CC0 by construction, nothing to download or
ship): tones and harmonic stacks, chirps, band-limited and modulated noise, impulses and
formant-like pulse trains, at levels from -40 to -6 dBFS, so the ranges cover what real
recordings give. ``agreement`` reports how far the int8 network is from fp32 (cosine between
their embeddings of the same windows).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from audioembed import frontend
from audioembed.audio_io import AudioError, audio_files, load_waveform
from audioembed.errors import InvalidArgumentError
from audioembed.loading import cached_model
from audioembed.model_folder import ModelFormatError
from audioembed.onnx_backend import INPUT_NAME, OnnxModel, export_bytes, onnx_model, require
from audioembed.outputs import atomic_write

CALIBRATION_WINDOWS = 150
_SR = frontend.SAMPLE_RATE


def synthetic_audio(n_clips: int = 60, seconds: float = 2.0, seed: int = 0) -> list[np.ndarray]:
    """Deterministic, varied 16 kHz test sounds for calibration."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * _SR)) / _SR
    clips = []
    for i in range(n_clips):
        kind = i % 6
        if kind == 0:  # harmonic stack
            f0 = rng.uniform(60, 800)
            x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 9))
        elif kind == 1:  # chirp
            f0, f1 = rng.uniform(100, 2000), rng.uniform(500, 7500)
            x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
        elif kind == 2:  # band-limited noise
            spec = np.fft.rfft(rng.standard_normal(t.size))
            f = np.fft.rfftfreq(t.size, 1 / _SR)
            lo = rng.uniform(50, 4000)
            spec[(f < lo) | (f > lo * rng.uniform(1.5, 4))] = 0
            x = np.fft.irfft(spec, t.size)
        elif kind == 3:  # amplitude-modulated noise
            x = rng.standard_normal(t.size) * (1 + np.sin(2 * np.pi * rng.uniform(0.5, 12) * t))
        elif kind == 4:  # impulses through a decaying resonance
            x = np.zeros_like(t)
            for start in rng.uniform(0, seconds - 0.1, size=int(rng.integers(2, 8))):
                k = np.arange(int(0.1 * _SR)) / _SR
                j = int(start * _SR)
                x[j:j + k.size] += np.sin(2 * np.pi * rng.uniform(100, 3000) * k) * np.exp(-k * 50)
        else:  # formant-like pulse train (voice-ish)
            f0 = rng.uniform(90, 250)
            pulses = (np.sin(2 * np.pi * f0 * t) > 0.99).astype(float)
            x = np.zeros_like(t)
            for formant in (rng.uniform(300, 900), rng.uniform(900, 2500), rng.uniform(2500, 3500)):
                k = np.arange(400) / _SR
                x += np.convolve(pulses, np.sin(2 * np.pi * formant * k) * np.exp(-k * 300), "same")
        x = x / (np.abs(x).max() + 1e-9) * 10 ** (rng.uniform(-40, -6) / 20)
        clips.append(x.astype(np.float32))
    return clips


def _all_windows(audio_dir: str | os.PathLike | None, seed: int) -> torch.Tensor:
    """Every log-mel window of the audio under ``audio_dir`` (or of :func:`synthetic_audio`
    with ``seed``), in an order shuffled with ``seed``."""
    if audio_dir is None:
        clips = synthetic_audio(seed=seed)
    else:
        clips = []
        for path in audio_files(audio_dir, recursive=True):
            try:
                clips.append(load_waveform(str(path)))
            except AudioError:
                continue  # an unreadable file calibrates nothing; the others still do
    windows = [frontend.log_mel_windows(torch.as_tensor(x))[0] for x in clips]
    x = torch.cat([w for w in windows if len(w)]) if windows else torch.empty(0)
    if len(x) == 0:
        raise InvalidArgumentError(f"no calibration windows found{f' under {audio_dir}' if audio_dir else ''}")
    return x[torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))]


def calibration_windows(audio_dir: str | os.PathLike | None = None, n: int = CALIBRATION_WINDOWS,
                        seed: int = 0) -> torch.Tensor:
    """``(n, 96, 64)`` log-mel windows: a seeded sample of those of the audio files under
    ``audio_dir``, or of :func:`synthetic_audio`."""
    return _all_windows(audio_dir, seed)[:n]


def quantize_bytes(fp32_onnx: bytes, windows: torch.Tensor, batch: int = 16) -> bytes:
    """The int8 (QDQ) model of an fp32 ONNX network, calibrated on ``windows``."""
    quant = require("onnxruntime.quantization", "int8 quantization")
    data = np.ascontiguousarray(windows.numpy(), dtype=np.float32)

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(0, len(data), batch))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {INPUT_NAME: data[i:i + batch]}

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32_onnx)
        # Shape inference and graph fusions first, as onnxruntime recommends for static QDQ.
        quant.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quant.quantize_static(str(pre), str(out), Reader(), quant_format=quant.QuantFormat.QDQ,
                              per_channel=True, activation_type=quant.QuantType.QUInt8,
                              weight_type=quant.QuantType.QInt8,
                              calibrate_method=quant.CalibrationMethod.MinMax)
        return out.read_bytes()


def agreement(reference, candidate, windows: torch.Tensor) -> dict:
    """Mean and min cosine between two networks' embeddings of the same windows."""
    with torch.inference_mode():
        a = np.asarray(reference(windows), dtype=np.float64)
    b = np.asarray(candidate(windows), dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "windows": int(len(cos))}


# Operators only a quantized graph holds: QDQ pairs (what quantize_bytes writes) and the
# integer kernels of onnxruntime's other quantization formats (QOperator, dynamic).
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                           "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger"})
_QUANTIZED: dict[tuple[str, int, int], bool] = {}


def is_quantized(path: str | os.PathLike) -> bool:
    """Whether the ONNX file at ``path`` is quantized: it has a quantization operator
    (:data:`QUANTIZED_OPS`) or 8-bit (or 4-bit) integer weights. Checked once per file version."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    if key not in _QUANTIZED:
        onnx = require("onnx", 'backend="onnx-int8" (to check that the file is quantized)')
        try:
            graph = onnx.load(os.fspath(path), load_external_data=False).graph
        except Exception as exc:  # noqa: BLE001 - onnx's own decode errors (DecodeError, ...)
            raise ModelFormatError(f"{os.fspath(path)}: not a loadable ONNX model ({exc})") from exc
        integer = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
        integer |= {getattr(onnx.TensorProto, t) for t in ("INT4", "UINT4") if hasattr(onnx.TensorProto, t)}
        _QUANTIZED[key] = (any(n.op_type in QUANTIZED_OPS for n in graph.node)
                           or any(t.data_type in integer for t in graph.initializer))
    return _QUANTIZED[key]


def check_quantized(path: str | os.PathLike) -> None:
    """Raise unless the ONNX file at ``path`` is quantized (:func:`is_quantized`)."""
    if not is_quantized(path):
        raise InvalidArgumentError(
            f'{os.fspath(path)}: backend="onnx-int8" needs a quantized ONNX file, and this one is '
            "not (no QuantizeLinear/DequantizeLinear or other quantized operators, no int8 "
            'weights): run it with backend="onnx" (--backend onnx), or write an int8 file with '
            "audioembed export-onnx OUT.onnx --int8")


def int8_model(model, device=None, *, pooled: bool = False) -> OnnxModel:
    """The int8 network for ``embed(..., backend="onnx-int8")``: a quantized ``.onnx`` file as
    it is (e.g. from ``export-onnx --int8``; a file that is not quantized raises), or any model
    ``load_model`` knows, quantized once per process with the default calibration set (with
    ``pooled``, keeping the pooled output)."""
    return onnx_model(model, device, backend="onnx-int8", check=check_quantized, pooled=pooled,
                      build=lambda net, pooled: quantize_bytes(export_bytes(net, pooled),
                                                               calibration_windows()))


def export_int8(model, path: str | os.PathLike, calibrate: str | os.PathLike | None = None,
                pooled: bool = False) -> dict:
    """Write ``model`` quantized to ``path``; returns its agreement with fp32 on windows it was
    not calibrated on: the synthetic set of another seed, or the calibration folder's next
    windows (the synthetic set when the folder has none to spare). ``model`` itself is left as
    it is (a module in training mode is measured through an eval-mode copy)."""
    every = _all_windows(calibrate, 0)
    calib, held_out = every[:CALIBRATION_WINDOWS], every[CALIBRATION_WINDOWS:2 * CALIBRATION_WINDOWS]
    if calibrate is None or not len(held_out):
        held_out = calibration_windows(seed=1)
    data = quantize_bytes(export_bytes(model, pooled), calib)
    atomic_write(Path(path), lambda f: f.write(data))
    return agreement(cached_model(model, None), OnnxModel(data), held_out)
