"""What a measurement ran on: the CPU and the features that change training and inference
speed (wide vectors, bf16, int8), for benchmark lines and experiment records; and whether this
hardware runs bf16 natively (:func:`bf16_enabled`, for the trainer and the experiments)."""
from __future__ import annotations

import os
import platform

import torch

# bf16 autocast pays off only with avx512_bf16/amx_bf16; int8 kernels use avx512_vnni/amx_int8.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, flags


def cpu_flags() -> list[str]:
    """The :data:`SPEED_FLAGS` this CPU has."""
    flags = _cpuinfo()[1]
    return [f for f in SPEED_FLAGS if f in flags]


def machine_info() -> dict:
    """CPU model and speed flags, cores, GPU, and the software versions."""
    model, flags = _cpuinfo()
    return {"cpu": model, "cpu_flags": [f for f in SPEED_FLAGS if f in flags], "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def bf16_enabled(setting: bool | str, device: torch.device) -> bool:
    """Whether to autocast to bf16: ``setting`` when true or false; for ``"auto"``, where the
    hardware computes it natively (CUDA; CPUs with AVX512-BF16 or AMX: see docs/benchmarks.md)."""
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return True
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))
