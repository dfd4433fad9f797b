"""Acceptance check of issue 13: a folder of good files and one of each hostile input.

Builds a folder holding good clips and one file each of 16001 Hz, 48001 Hz, huge-valued float
samples, a FIFO, a non-UTF-8 name, a 250-byte name and a truncated WAV; runs
``python -m audioembed extract FOLDER -o OUT`` on it (the bundled default model) under an
address-space limit like ``ulimit -v 10000000``; prints the wall time, the peak RSS of the
command, its exit code, and whether every good and readable file was written.

    python benchmarks/bad_input_folder.py [--limit-kb 10000000] [--keep DIR]

Pass: exit code 1 (the FIFO and the huge file fail), every other file written, under 60 s
and 1.5 GB peak RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from common import load_average

ROOT = Path(__file__).resolve().parent.parent


def _noise(seconds: float, sr: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def build(folder: Path) -> dict[bytes, bool]:
    """The hostile folder; file name (bytes) -> whether an output must be written for it."""
    folder.mkdir(parents=True)
    expect: dict[bytes, bool] = {}

    def add(name: bytes, data: np.ndarray | None, sr: int = 16000, written: bool = True, **kw):
        path = os.fsencode(folder) + b"/" + name
        if data is not None:
            sf.write(path, data, sr, format="WAV", **kw)  # bytes: the name need not be UTF-8
        expect[name] = written

    for i, (sr, seconds) in enumerate([(16000, 10), (44100, 10), (48000, 10), (22050, 5), (8000, 5)]):
        add(f"good_{i}_{sr}.wav".encode(), _noise(seconds, sr, i), sr)
    add(b"odd_16001.wav", _noise(1, 16001, 10), 16001)
    add(b"odd_48001.wav", _noise(1, 48001, 11), 48001)
    add(b"huge_float.wav", _noise(2, 16000, 12) * np.float32(4e19), subtype="FLOAT", written=False)
    os.mkfifo(os.fsencode(folder) + b"/fifo.wav")
    expect[b"fifo.wav"] = False
    add(b"caf\xe9_latin1.wav", _noise(2, 16000, 13))
    add(b"L" * 246 + b".wav", _noise(2, 16000, 14))  # 250 bytes
    add(b"truncated.wav", _noise(4, 16000, 15))
    full = os.fsencode(folder) + b"/truncated.wav"
    data = open(full, "rb").read()
    open(full, "wb").write(data[:len(data) // 2])  # the header still declares 4 s
    return expect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-kb", type=int, default=10_000_000, help="address-space limit (ulimit -v)")
    ap.add_argument("--keep", type=Path, default=None, help="build the folder here and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="audioembed-bad-"))
    folder, out = work / "in", work / "out"
    expect = build(folder)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (args.limit_kb * 1024, args.limit_kb * 1024))

    load_before = load_average()
    cmd = [sys.executable, "-m", "audioembed", "extract", str(folder), "-o", str(out), "-q"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, preexec_fn=limit, capture_output=True, timeout=600)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    written = {n[:-4] for n in os.listdir(os.fsencode(out))} if out.exists() else set()
    missing = [n for n, w in expect.items() if w and os.path.splitext(n)[0] not in written]
    extra = [n for n, w in expect.items() if not w and os.path.splitext(n)[0] in written]
    print("command:", " ".join(cmd[1:]), f"(ulimit -v {args.limit_kb})")
    print(res.stderr.decode("utf-8", "backslashreplace").rstrip())
    print(f"cpu: {_cpu_name()}, {os.cpu_count()} cores, load average {load_average()} (before: {load_before})")
    print(f"wall time {wall:.1f} s, peak RSS {peak_mb:.0f} MB, exit code {res.returncode}")
    print(f"written {len(written)} of {sum(expect.values())} expected; missing: {missing or 'none'}; "
          f"written but should have failed: {extra or 'none'}")
    ok = res.returncode == 1 and not missing and not extra and wall < 60 and peak_mb < 1536
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
