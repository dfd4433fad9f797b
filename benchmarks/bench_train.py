"""Training throughput of the paper's ResNet-50 (section 4.2) in triplets/s, on this machine.

Prints, from one process:

- ``bare``: forward + backward + Adam on pre-made log-mel tensors (the model's ceiling);
- ``pipeline``: the trainer's own step (``training.trainer.train_step``) fed by its batch
  stream (``StepBatches`` over a small synthetic feature cache, sampled in a background thread);
- the data pipeline's share of step time: the time to sample one batch alone, and the time the
  step loop actually waited for a batch;
- ``recipes``: the paper's recipe (v0.2: hinge loss, in-batch semi-hard mining) against a new
  one (``--new`` overrides; default: every v0.3 option on: batch-all over a 4,096-window
  cross-batch memory, harder positives), their steps interleaved so both see the same load,
  with the ratio new / old.

    python benchmarks/bench_train.py [--steps 6] [--threads 2] [--batch 32] [--bf16 auto|on|off]
        [--new 'loss.kind="nt-xent"' --new augment.enabled=true]

``--real [RECIPE]`` (default: the release recipe) instead runs the recipe through the trainer
itself (``training.trainer.train``: warm start, sampling thread, negative memory, schedule,
logging, checkpoints and dev tracking) on a synthetic cache shaped like the corpus and a
synthetic labelled dev set of the recipe's size, and prints its rate beside the bare
forward + backward + Adam rate of the same model, loss and batch size, measured in the same
process just before:

    python benchmarks/bench_train.py --real [--real-steps 60] [--real-set train.checkpoint_every=25]

Targets on 2 CPU cores: >= 15 triplets/s, data pipeline < 10% of step time. Other work on the
machine slows every number; the load average is printed next to them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audioembed import frontend  # noqa: E402
from audioembed.model import AudioResNet, ModelConfig  # noqa: E402
from training.feature_cache import CacheWriter  # noqa: E402
from training.losses import TripletLoss  # noqa: E402
from training.samplers import DEFAULT_JOINT  # noqa: E402
from training.config import from_dict  # noqa: E402
from training.machine import bf16_enabled  # noqa: E402
from training.trainer import StepBatches, batch_stream, train_step  # noqa: E402
from real_loop import run_real  # noqa: E402
from common import cpu_flags, interleaved_times  # noqa: E402


def synthetic_cache(folder: Path, recordings: int = 40, frames: int = 3000) -> None:
    """Log-normal 'energies' with some structure; content does not matter for speed."""
    rng = np.random.default_rng(0)
    with CacheWriter(folder) as w:
        for i in range(recordings):
            e = rng.lognormal(mean=-2.0, sigma=2.0, size=(frames, frontend.N_MELS)).astype(np.float32)
            w.add(f"rec{i}.wav", e)


CPU_TIME: dict[str, list[float]] = {}
RELEASE_RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "debian" / "joint_v04.toml"
NEW_RECIPE = ('loss.kind="batch-all"', "loss.xbm_size=4096", "augment.enabled=true")


def compare_recipes(tmp: str, cfg: ModelConfig, b: int, overrides: list[str], steps: int, warmup: int,
                    autocast) -> None:
    """The trainer's step under the paper's recipe and under ``overrides``, interleaved."""
    from training.config import apply_override
    from training.trainer import make_loss, make_pool

    runs = {}
    for name, sets in (("old", []), ("new", overrides)):
        d = {"data": {"cache": tmp}, "model": cfg.to_dict(), "train": {"batch_size": b}}
        for o in sets:
            apply_override(d, o)
        config = from_dict(d)
        torch.manual_seed(0)
        model = AudioResNet(cfg).to(memory_format=torch.channels_last).train()
        loss_fn = make_loss(config)
        opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-4)
        dataset = StepBatches(tmp, config.samplers, b, seed=0, rank=0, augment=config.augment)
        pool = make_pool(config, torch.device("cpu"))
        runs[name] = [model, loss_fn, opt, dataset, pool, 0]

    def one_step(name: str) -> None:
        model, loss_fn, opt, dataset, pool, k = runs[name]
        batch = dataset[k]  # sampling and augmentation are part of the recipe's cost
        train_step(model, loss_fn, opt, batch, torch.device("cpu"), autocast, pool)
        if pool is not None:
            pool.update(loss_fn.last_pool, k)
        runs[name][5] = k + 1

    for _ in range(warmup):
        for name in runs:
            one_step(name)
    times = interleaved_times({name: (lambda n=name: one_step(n)) for name in runs}, steps)
    med = {name: float(np.median(t)) for name, t in times.items()}
    print(f"recipes (sampling + step, serial, {steps} interleaved steps each):")
    print(f"  old (paper, v0.2):  {b / med['old']:6.1f} triplets/s")
    print(f"  new ({' '.join(overrides)}):  {b / med['new']:6.1f} triplets/s")
    print(f"  new / old: {med['old'] / med['new']:.3f}  (target >= 0.85)")


def timed_steps(fn, steps: int, warmup: int, name: str = "") -> list[float]:
    """Wall seconds per call; also records this process's CPU seconds per call under ``name``
    (CPU time / threads is what a step would take on idle cores)."""
    for _ in range(warmup):
        fn()
    out, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        out.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    CPU_TIME[name] = cpu
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="triplets per step")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", default="3,4,6,3", help="ResNet block counts (default ResNet-50)")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="bf16 autocast; auto: the trainer's default (native bf16 CPUs)")
    ap.add_argument("--no-mining", action="store_true")
    ap.add_argument("--new", action="append", metavar="SECTION.KEY=VALUE", default=None,
                    help="the new recipe, as train --set overrides (repeatable); default: "
                         + " ".join(NEW_RECIPE))
    ap.add_argument("--real", nargs="?", const=str(RELEASE_RECIPE), default=None, metavar="RECIPE",
                    help="run RECIPE (default: the release recipe) through the trainer's own loop")
    ap.add_argument("--real-steps", type=int, default=60, help="steps of the --real run")
    ap.add_argument("--real-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="train --set overrides for the --real run (repeatable)")
    args = ap.parse_args()
    if args.real:
        # The first steps of a process build oneDNN kernels and Adam's state: seconds each.
        run_real(Path(args.real), args.real_steps, args.real_set, max(args.warmup, 3), args.steps)
        return

    torch.set_num_threads(args.threads)
    cfg = ModelConfig(layers=tuple(int(x) for x in args.layers.split(",")))
    bf16 = bf16_enabled({"auto": "auto", "on": True, "off": False}[args.bf16], torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    b = args.batch
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"model layers {cfg.layers}, batch {b} triplets ({3 * b} windows), bf16 {bf16}, "
          f"CPU flags: {cpu_flags()}")
    print(f"load average before: {os.getloadavg()}")

    with tempfile.TemporaryDirectory() as tmp:
        synthetic_cache(Path(tmp))
        spec = {name: {} for name in DEFAULT_JOINT}
        dataset = StepBatches(tmp, spec, b, seed=0, rank=0)
        loss_fn = TripletLoss(mining=not args.no_mining)

        # Sampling alone, synchronously.
        sample_s = timed_steps(lambda: dataset[np.random.randint(1 << 30)], args.steps, 1)

        # Bare model step on a fixed batch (same step function, batch already in memory).
        torch.manual_seed(0)
        model = AudioResNet(cfg).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        fixed = dataset[0]
        bare_s = timed_steps(lambda: train_step(model, loss_fn, opt, fixed, torch.device("cpu"), autocast),
                             args.steps, args.warmup, name="bare")

        # The trainer's pipeline: batches from a background thread while the model steps.
        torch.manual_seed(0)
        model = AudioResNet(cfg).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        stream = batch_stream(dataset, 0, args.steps + args.warmup, workers=0, pin=False)
        waits, steps_s, cpu = [], [], []
        for i in range(args.steps + args.warmup):
            t0, c0 = time.perf_counter(), time.process_time()
            batch = next(stream)
            t1 = time.perf_counter()
            train_step(model, loss_fn, opt, batch, torch.device("cpu"), autocast)
            t2 = time.perf_counter()
            if i >= args.warmup:
                waits.append(t1 - t0)
                steps_s.append(t2 - t0)
                cpu.append(time.process_time() - c0)
        CPU_TIME["pipeline"] = cpu
        compare_recipes(tmp, cfg, b, args.new or list(NEW_RECIPE), args.steps, args.warmup, autocast)

    def stats(xs):
        return float(np.median(xs)), float(np.mean(xs))

    bare_med, _ = stats(bare_s)
    pipe_med, pipe_mean = stats(steps_s)
    samp_med, _ = stats(sample_s)
    print(f"bare fwd+bwd+Adam:   {bare_med:6.3f} s/step  {b / bare_med:6.1f} triplets/s (median)")
    print(f"trainer pipeline:    {pipe_med:6.3f} s/step  {b / pipe_med:6.1f} triplets/s (median; "
          f"mean {b / pipe_mean:.1f})")
    print(f"sampling one batch:  {samp_med * 1000:6.1f} ms = {100 * samp_med / pipe_med:4.1f}% of a step "
          f"if not overlapped")
    print(f"waiting for batches: {1000 * float(np.mean(waits)):6.1f} ms/step = "
          f"{100 * sum(waits) / sum(steps_s):4.1f}% of step time (prefetch thread)")
    n = torch.get_num_threads()
    for name in ("bare", "pipeline"):
        c = float(np.median(CPU_TIME[name]))
        print(f"{name:>8}: {c:6.2f} CPU-s/step -> {b * n / c:5.1f} triplets/s projected on {n} idle cores "
              f"(this run got {c / (bare_med if name == 'bare' else pipe_med):.2f} cores)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
