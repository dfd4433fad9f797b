"""Which network runs the windows: torch (the default) or onnxruntime."""
from __future__ import annotations

from audioembed.errors import InvalidArgumentError
from audioembed.loading import cached_model
from audioembed.onnx_backend import onnx_model
from audioembed.quantize import int8_model

BACKENDS = ("torch", "onnx", "onnx-int8")


def resolve_backend(model, device, backend: str):
    """The network ``api.iter_embeddings`` runs: a torch model, or (``"onnx"``, ``"onnx-int8"``)
    an onnxruntime one, fp32 or statically quantized to int8 (``audioembed.quantize``). ``model`` is anything ``load_model`` takes, a loaded model, or (onnx) an ``.onnx`` file."""
    if backend == "torch":
        return cached_model(model, device)
    if backend == "onnx":
        return onnx_model(model, device)
    if backend == "onnx-int8":
        return int8_model(model, device)
    raise InvalidArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
