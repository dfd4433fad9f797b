"""Shared by the benchmark scripts: interleaved timing, the machine-load line, and the JSON record
that ``benchmarks/report.py`` renders into docs/benchmarks.md."""
from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

# Run from a source checkout without installing: the package is the scripts' parent's sibling.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.machine import SPEED_FLAGS, cpu_flags as found, machine_info  # noqa: E402


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


def write_record(path: str | os.PathLike, title: str, columns: list[str], rows: list[list],
                 conditions: str = "", notes: tuple[str, ...] = ()) -> None:
    """One measured run as ``benchmarks/results/*.json`` holds it (see ``benchmarks/report.py``):
    the command as typed, this machine's CPU model, cores and speed flags, today's date, rows."""
    import torch

    from audioembed.outputs import atomic_write

    info = machine_info()
    record = {
        "title": title,
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "host": {"cpu": info["cpu"], "cpus": info["cpus"], "cpu_flags": info["cpu_flags"],
                 "software": f"torch {info['torch']}, {torch.get_num_threads()} threads"
                             + (f", {info['gpu']}" if info["gpu"] else "")},
        "conditions": conditions,
        "columns": columns, "rows": rows, "notes": list(notes),
        "load_average_at_end": load_average(),  # kept in the record, not rendered
    }
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))
