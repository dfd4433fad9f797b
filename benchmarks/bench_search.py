"""Exact top-k search time over a large index, with the CPU it ran on.

    python benchmarks/bench_search.py [--rows 1000000] [--dim 128] [-k 10] [--repeats 5]

Builds a ``--rows`` x ``--dim`` index of random unit vectors (float32; 1M x 128 is 512 MB), a
query near one of its rows, and times ``audioembed.search.top_k`` (blocked matrix products with
a running top-k in numpy, as ``audioembed search`` runs it) over ``--repeats`` runs; it prints
the best and the median time with the machine line (CPUs, load average before and after) and
the CPU's speed flags. The search is checked first: the row the query was made from must rank first.
The test suite checks that result on a 1M-row index; how long it takes is measured here, since
a time limit inside a test depends on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import cpu_flags, load_average, machine_line  # also puts the checkout on sys.path

import numpy as np

from audioembed.search import top_k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="index rows (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=128, help="embedding size (default 128)")
    ap.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    ap.add_argument("--repeats", type=int, default=5, help="timed searches; best and median printed")
    args = ap.parse_args()

    load_before = load_average()
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    target = int(rng.integers(args.rows))
    query = emb[target] + 0.01 * rng.standard_normal(args.dim, dtype=np.float32)

    scores, rows = top_k(query, emb, k=args.k)  # also the warm-up
    if rows[0, 0] != target:
        raise SystemExit(f"row {rows[0, 0]} ranked first, not {target}: not benchmarking a wrong search")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        top_k(query, emb, k=args.k)
        times.append(time.perf_counter() - t0)

    print(machine_line(load_before))
    print(f"CPU flags: {cpu_flags()}")
    print(f"index: {args.rows:,} x {args.dim} float32 ({emb.nbytes / 2 ** 20:.0f} MB), k = {args.k}; "
          f"top score {scores[0, 0]:.4f}")
    print(f"search: best {min(times):.3f} s, median {statistics.median(times):.3f} s "
          f"over {args.repeats} runs")


if __name__ == "__main__":
    main()
