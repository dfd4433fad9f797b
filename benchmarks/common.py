"""Shared by the benchmark scripts: interleaved timing and the machine-load line."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# Run from a source checkout without installing: the package is the scripts' parent's sibling.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.machine import SPEED_FLAGS, cpu_flags as found  # noqa: E402


def interleaved_times(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each function over ``repeats`` rounds, the functions alternating.

    Alternating (rather than timing one function's runs, then the other's) exposes both to the
    same background load, so a burst from another process does not bias the ratio.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line(load_before: str) -> str:
    """torch version, threads, CPUs and the load average now and before the run."""
    import torch

    return (f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
            f"load average {load_average()} (before: {load_before})")


def cpu_flags() -> str:
    """The CPU features that change these benchmarks' numbers (bf16, int8 and wide vectors)."""
    return " ".join(found()) or "none of " + ",".join(SPEED_FLAGS)
