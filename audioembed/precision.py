"""The number format the torch network runs in: fp32, or bf16 autocast (``precision=``).

``"auto"`` (the default) runs bf16 on a CUDA GPU that supports it and fp32 everywhere else;
``"bf16"`` asks for bf16 and is refused, with a one-line error, where it cannot run natively:
the onnx backends, MPS, and CPUs without bf16 instructions (AVX512-BF16 or AMX), where
autocast would be emulated and slower than fp32. ``"fp32"`` is the reference.

Only the network runs under autocast: the log-mel frontend stays fp32, and the output is cast
back to fp32 and, for the unit-norm embedding, re-normalised, so a bf16 result is a float32
unit vector like an fp32 one. Inference stays deterministic (no sampling, eval mode).
``tests/test_precision.py`` holds the agreement: cosine >= 0.999 to fp32 on spoken-digit clips.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from audioembed.errors import InvalidArgumentError
from audioembed.model import AudioResNet

PRECISIONS = ("auto", "fp32", "bf16")
# The CPU flags (Linux /proc/cpuinfo names) of native bf16 arithmetic.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_flags() -> set[str]:
    """This CPU's flags from /proc/cpuinfo; none where there is no such file (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            lines = [line for line in f if line.startswith("flags")]
    except OSError:
        return set()
    return set(lines[0].partition(":")[2].split()) if lines else set()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), as torch's probes or
    the kernel's CPU flags say."""
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe() for probe in probes if probe is not None):
        return True
    return bool(_cpuinfo_flags() & set(NATIVE_BF16_FLAGS))


def cuda_has_bf16() -> bool:
    """Whether CUDA is here and its current GPU computes in bf16 (compute capability >= 8.0)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def check_precision(precision: str, backend: str = "torch") -> None:
    """Refuse a precision that is not one of :data:`PRECISIONS`, or bf16 with an onnx backend."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and backend != "torch":
        raise InvalidArgumentError(f'precision="bf16" runs with the torch backend only; backend '
                                   f'{backend!r} runs its own graph (use precision="auto" or "fp32")')


def precision_on(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` runs as on ``device``.

    Raises:
        InvalidArgumentError: ``"bf16"`` where it is not native (see the module docstring).
    """
    check_precision(precision)
    device = torch.device(device)
    if precision == "fp32":
        return "fp32"
    if device.type == "cuda":
        native = cuda_has_bf16()
    elif device.type == "cpu":
        native = precision == "bf16" and cpu_has_native_bf16()
    else:
        native = False
    if native:
        return "bf16"
    if precision == "auto":
        return "fp32"
    where = "this CPU lacks AVX512-BF16 and AMX, so bf16 would be emulated and slower than fp32" \
        if device.type == "cpu" else f"{device.type} devices run fp32 here"
    raise InvalidArgumentError(f'precision="bf16" is not available on {device}: {where}; '
                               'use precision="fp32"')


class Bf16Network(torch.nn.Module):
    """``net`` under bf16 autocast, its output cast back to float32; an :class:`AudioResNet`'s
    unit-norm embeddings are re-normalised in float32. ``precision`` is ``"bf16"`` or
    ``"auto"`` (bf16 only while the network is on a CUDA device with bf16)."""

    def __init__(self, net: torch.nn.Module, precision: str = "bf16"):
        super().__init__()
        self.net = net
        self.precision = precision
        self.normalizes = isinstance(net, AudioResNet)

    @property
    def embedding_dim(self) -> int:
        return self.net.embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if precision_on(self.precision, x.device) == "fp32":
            return self.net(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.net(x)
        out = out.float()
        return F.normalize(out, dim=1) if self.normalizes else out


def with_precision(net, precision: str, backend: str = "torch"):
    """``net`` to run at ``precision``: a torch network wrapped in :class:`Bf16Network` unless
    it is fp32 (``"auto"`` decides on each call, from where the network then is). An onnx
    network is returned as it is (``"bf16"`` with it raises, see :func:`check_precision`).

    Raises:
        InvalidArgumentError: a precision that cannot run here, checked where the network is.
    """
    check_precision(precision, backend)
    if not isinstance(net, torch.nn.Module) or precision == "fp32":
        return net
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    precision_on(precision, device)  # refuse bf16 now, not at the first batch
    return Bf16Network(net, precision)


def precision_in_use(net) -> str:
    """``"bf16"`` or ``"fp32"``: what ``net`` (from :func:`with_precision`) runs as now."""
    if not isinstance(net, Bf16Network):
        return "fp32"
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    return precision_on(net.precision, device)
