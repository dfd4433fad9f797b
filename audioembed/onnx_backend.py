"""The network as ONNX: export (``audioembed export-onnx``) and inference with onnxruntime.

The graph is the network only, like ``AudioResNet.forward``: log-mel windows ``log_mel``
``(batch, 96, 64)`` float32 in, unit-norm ``embedding`` ``(batch, 128)`` out, the batch
dimension dynamic. The frontend stays in Python (``embed(..., backend="onnx")``). The model's
source, sha256 and the frontend constants are stored as ONNX metadata.

Optional packages (``pip install 'audioembed[onnx]'``): onnxruntime to run, onnx and
onnxscript (torch's ONNX exporter) to export. They are imported only when used.
"""
from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from audioembed import frontend
from audioembed.errors import InvalidArgumentError, MissingDependencyError
from audioembed.loading import ONNX, cached_model, parse_model_spec
from audioembed.model import AudioResNet
from audioembed.model_folder import ModelFormatError
from audioembed.outputs import atomic_write

INPUT_NAME = "log_mel"
OUTPUT_NAME = "embedding"
POOLED_NAME = "pooled"
EXTRA = "pip install 'audioembed[onnx]'"


def require(module: str, purpose: str):
    """Import an optional dependency, or raise MissingDependencyError (an ImportError) saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{purpose} needs the optional package {module!r}: {EXTRA}") from exc


class _BothOutputs(torch.nn.Module):
    """The network with its pooled features as a second output."""

    def __init__(self, net: AudioResNet):
        super().__init__()
        self.net = net
        self.train(net.training)  # a new Module starts in training mode; the exporter reads ours

    def forward(self, x: torch.Tensor):
        pooled = self.net.pooled(x)
        return torch.nn.functional.normalize(self.net.fc(pooled), dim=1), pooled


def export_bytes(model: AudioResNet, pooled: bool = False) -> bytes:
    """The serialized ONNX model of ``model`` (fp32, CPU, eval mode; dynamic batch); with
    ``pooled``, a second output ``pooled`` ``(batch, 2048)`` holds the pooled features."""
    require("onnxscript", "exporting to ONNX")
    require("onnx", "exporting to ONNX")
    # A copy: exporting must not move, cast or re-mode the caller's network.
    net = copy.deepcopy(model).float().cpu().eval()
    outputs = [OUTPUT_NAME]
    if pooled:
        net, outputs = _BothOutputs(net), [OUTPUT_NAME, POOLED_NAME]
    example = torch.zeros(2, frontend.WINDOW_FRAMES, frontend.N_MELS)
    # The exporter logs that torchvision's detection ops are skipped (we use none) and warns
    # about its own pytree internals: nothing a caller can act on.
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            program = torch.onnx.export(
                net, (example,), None, dynamo=True, input_names=[INPUT_NAME],
                output_names=outputs, dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False)
    finally:
        registry_log.setLevel(level)
    proto = program.model_proto
    info = getattr(model, "info", {}) or {}
    meta = {"producer": "audioembed", "source": info.get("source"), "sha256": info.get("sha256"),
            "model_config": json.dumps(model.config.to_dict()),
            "frontend": json.dumps(frontend.config())}
    for key, value in meta.items():
        if value is not None:
            proto.metadata_props.add(key=key, value=str(value))
    return proto.SerializeToString()


def export(model: AudioResNet, path: str | os.PathLike, pooled: bool = False) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically)."""
    path = Path(path)
    data = export_bytes(model, pooled)
    atomic_write(path, lambda f: f.write(data))
    return path


class OnnxModel:
    """An ONNX embedding network under onnxruntime; called on ``(B, 96, 64)`` windows it returns
    ``(B, D)`` float32 embeddings, so ``api.iter_embeddings`` takes it in place of a torch model."""

    def __init__(self, model: str | os.PathLike | bytes, threads: int | None = None,
                 output: str = OUTPUT_NAME):
        ort = require("onnxruntime", 'backend="onnx"')
        opts = ort.SessionOptions()
        # As many threads as torch uses, so the two backends compare like for like.
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        # Idle intra-op threads sleep instead of spinning: a spinning thread holds a core that
        # the feature worker (extract's default for this backend) or another process needs
        # (benchmarks/bench_scale.py measures both; docs/benchmarks.md has the figures).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = model if isinstance(model, bytes) else os.fspath(model)
        try:
            self.session = ort.InferenceSession(source, sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own types (Fail, NoSuchFile, ...)
            if isinstance(model, bytes):
                raise  # exported here: a bug, not the caller's file
            raise ModelFormatError(f"{source}: not a loadable ONNX model ({exc})") from exc
        outputs = {o.name: o for o in self.session.get_outputs()}
        if output not in outputs:
            raise ModelFormatError(f"{source if not isinstance(model, bytes) else 'the exported model'}: "
                                   f"no output {output!r} (it has {sorted(outputs)}; export with "
                                   "--pooled for the pooled features)")
        self.output = output
        self.embedding_dim = int(outputs[output].shape[-1])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def with_output(self, output: str) -> "OnnxModel":
        """The same session read out at another of its outputs."""
        other = copy.copy(self)
        if output not in {o.name for o in self.session.get_outputs()}:
            raise ModelFormatError(f"this ONNX model has no output {output!r}; export it with --pooled")
        other.output = output
        other.embedding_dim = int(next(o for o in self.session.get_outputs() if o.name == output).shape[-1])
        return other

    def __call__(self, windows: torch.Tensor) -> np.ndarray:
        x = np.ascontiguousarray(windows.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run([self.output], {INPUT_NAME: x})[0]


_FILES: dict[str, OnnxModel] = {}
# Networks exported (or quantized) in memory, per backend and outputs, once per loaded model.
_BUILT: "dict[tuple[str, bool], weakref.WeakKeyDictionary[torch.nn.Module, OnnxModel]]" = {}


def onnx_model(model, device=None, *, backend: str = "onnx", build=None, check=None,
               pooled: bool = False) -> OnnxModel:
    """An :class:`OnnxModel` for ``embed(model=..., backend=backend)``: an ``.onnx`` file as it
    is (once ``check(path)``, which raises for a file ``backend`` cannot run, passes), or any model
    ``load_model`` knows (or a loaded one), turned into ONNX bytes by ``build(net, pooled)``
    (default :func:`export_bytes`; ``audioembed.quantize`` passes its int8 quantizer) once per
    process; with ``pooled`` the export also has the ``pooled`` output (``layer="pooled"``)."""
    if isinstance(model, OnnxModel):
        return model
    if device is not None and torch.device(device).type != "cpu":
        raise InvalidArgumentError(f'backend="{backend}" runs on the CPU (onnxruntime); got device={device!r}')
    if isinstance(model, (str, os.PathLike)) and parse_model_spec(model).kind == ONNX:
        key = os.path.realpath(model)
        if key not in _FILES:
            _FILES[key] = OnnxModel(model)  # a missing or broken file fails here, first
        if check is not None:
            check(model)
        return _FILES[key]
    net = cached_model(model, None)  # loads are cached, so a name is converted once
    built = _BUILT.setdefault((backend, pooled), weakref.WeakKeyDictionary())
    if net not in built:
        built[net] = OnnxModel((build or export_bytes)(net, pooled))
    return built[net]


def export_and_check(model: AudioResNet, path: str | os.PathLike, batch: int = 3,
                     seed: int = 0, pooled: bool = False) -> float | None:
    """Export, then the largest difference between onnxruntime and torch on random windows
    (None when onnxruntime is not installed)."""
    export(model, path, pooled)
    try:
        runner = OnnxModel(path)
    except ImportError:
        return None
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frontend.WINDOW_FRAMES, frontend.N_MELS, generator=g) - 4.0
    with torch.inference_mode():
        want = model(x).numpy()
    return float(np.abs(runner(x) - want).max())

