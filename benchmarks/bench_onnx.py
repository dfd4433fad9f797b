"""Model-only throughput of the ResNet-50 under torch and under onnxruntime, in one run.

    python benchmarks/bench_onnx.py [--batch-size 64] [--batches 4] [--repeats 5] [--threads N] [--json PATH]

A randomly initialised ResNet-50 (the release architecture) is exported with
``audioembed.onnx_backend`` and both backends embed the same random log-mel batches on the same
number of intra-op threads (default: torch's). Each round times the two alternately; the best
round of each and the median of per-round ratios are printed, with the load average (the
figures mean little on a machine busy with other work).
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import interleaved_times, load_average, machine_line, write_record  # also puts the checkout on sys.path

import numpy as np
import torch

from audioembed import AudioResNet, ModelConfig
from audioembed.api import embed_windows
from audioembed.onnx_backend import OnnxModel, export_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=4, help="batches per timed round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for both")
    ap.add_argument("--json", default=None, metavar="PATH",
                    help="also write the run as a benchmarks/results JSON (benchmarks/report.py)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_before = load_average()

    torch.manual_seed(0)
    net = AudioResNet(ModelConfig()).eval()
    t0 = time.perf_counter()
    runner = OnnxModel(export_bytes(net), threads=threads)
    export_s = time.perf_counter() - t0
    batches = [torch.randn(args.batch_size, 96, 64) - 4 for _ in range(args.batches)]
    diff = max(float(np.abs(runner(b) - embed_windows(net, b, len(b))).max()) for b in batches)

    fns = {"torch": lambda: [embed_windows(net, b, len(b)) for b in batches],
           "onnxruntime": lambda: [runner(b) for b in batches]}
    interleaved_times(fns, 1)  # warm-up: kernel selection, allocations
    times = interleaved_times(fns, args.repeats)
    n = args.batch_size * args.batches
    ratio = statistics.median(t / o for t, o in zip(times["torch"], times["onnxruntime"]))
    print(machine_line(load_before))
    print(f"ResNet-50, {args.batches} batches of {args.batch_size} windows, best of {args.repeats}; "
          f"export + session {export_s:.1f} s; max |onnxruntime - torch| {diff:.1e}")
    for name in fns:
        best = min(times[name])
        print(f"{name:>12}: {n / best:8.1f} windows/s  (best {best * 1e3:.0f} ms, median "
              f"{statistics.median(times[name]) * 1e3:.0f} ms)")
    print(f"onnxruntime / torch speed: {min(times['torch']) / min(times['onnxruntime']):.2f}x (best "
          f"times), {ratio:.2f}x (median of per-round ratios)")
    if args.json:
        rows = [[name, f"{n / min(times[name]):.1f}"] for name in fns]
        rows.append(["onnxruntime / torch", f"{min(times['torch']) / min(times['onnxruntime']):.2f}x"])
        write_record(args.json, "The network alone: torch against onnxruntime", ["backend", "windows/s"], rows,
                     notes=(f"batches of {args.batch_size} windows, best of {args.repeats} rounds; max "
                            f"|onnxruntime - torch| {diff:.1e}",))


if __name__ == "__main__":
    main()
