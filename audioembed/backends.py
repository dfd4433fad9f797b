"""Which network runs the windows: torch (the default) or onnxruntime."""
from __future__ import annotations

import os

import torch

from audioembed.errors import InvalidArgumentError
from audioembed.loading import ONNX, cached_model, parse_model_spec
from audioembed.model_folder import ModelFormatError
from audioembed.onnx_backend import OnnxModel, onnx_model
from audioembed.quantize import int8_model

BACKENDS = ("torch", "onnx", "onnx-int8")


def is_onnx_model(model) -> bool:
    """Whether ``model`` is an ONNX network: an ``.onnx`` file name (as ``parse_model_spec``
    reads names: a registry or ``hf-hub:`` name never is) or a loaded :class:`OnnxModel`."""
    if isinstance(model, OnnxModel):
        return True
    if not isinstance(model, (str, os.PathLike)):
        return False
    try:
        return parse_model_spec(model).kind == ONNX
    except ModelFormatError:
        return False  # not a name of any kind: loading it says so, whatever the backend


def choose_backend(model, backend: str | None = None) -> str:
    """The backend that runs ``model``: ``backend`` when given, else (None) ``"onnx"`` for an
    ONNX network (an ``.onnx`` file or an :class:`OnnxModel`) and ``"torch"`` for any other.

    Raises:
        InvalidArgumentError: ``backend`` is not one of :data:`BACKENDS`, or is ``"torch"``
            for an ONNX network, which only onnxruntime runs.
    """
    if backend is None:
        return "onnx" if is_onnx_model(model) else "torch"
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch" and is_onnx_model(model):
        what = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "an OnnxModel"
        raise InvalidArgumentError(f'{what} is an ONNX network: it runs with backend="onnx" or '
                                   '"onnx-int8" (leave backend unset to pick onnx), not backend="torch"')
    return backend


def default_workers(device: str | torch.device | None, backend: str = "torch") -> int:
    """Feature threads when none are asked for (``workers=None`` in ``embed()``, no
    ``--workers`` on the command line): one, except for a torch network on the CPU of a
    machine with two cores or fewer, where the thread only competes with the network's own
    OpenMP threads. onnxruntime's threads sleep when idle, so there the worker fills the gaps
    (``benchmarks/bench_scale.py``; docs/benchmarks.md has the figures)."""
    torch_on_cpu = backend == "torch" and (device is None or torch.device(device).type == "cpu")
    return 0 if torch_on_cpu and (os.cpu_count() or 1) <= 2 else 1


def resolve_backend(model, device, backend: str | None = None, *, pooled: bool = False):
    """The network ``api.iter_embeddings`` runs: a torch model, or (``"onnx"``, ``"onnx-int8"``)
    an onnxruntime one, fp32 or statically quantized to int8 (``audioembed.quantize``).

    ``model`` is anything ``load_model`` takes, a loaded model, or an ``.onnx`` file; ``backend``
    None picks one (:func:`choose_backend`). ``pooled``: a model exported to ONNX here keeps its
    pooled features as a second output, for ``layer="pooled"`` (an ``.onnx`` file has that
    output when it was exported with ``--pooled``)."""
    backend = choose_backend(model, backend)
    if backend == "torch":
        return cached_model(model, device)
    if backend == "onnx":
        return onnx_model(model, device, pooled=pooled)
    return int8_model(model, device, pooled=pooled)
