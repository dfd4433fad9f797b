"""``bench_train.py --real``: a recipe through the trainer's own loop, beside the bare step.

The bare step is :func:`training.trainer.train_step` on one batch already in memory, with the
recipe's model, loss, optimizer and bf16 setting and no negative memory: the ceiling of the
network on this machine. The real run is :func:`training.trainer.train` itself, with everything
the recipe switches on. Their ratio is what the trainer's own machinery costs.

Rates of the real run come from its ``train_log.jsonl``: the step lines (whose clock leaves out
dev measurements) give the loop's rate, checkpoints and batch waits included; the dev lines
give the seconds of each dev measurement, which ``[dev] every`` spreads over its steps.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audioembed import frontend
from common import cpu_flags
from training.config import apply_override, from_dict, read_toml
from training.feature_cache import CacheWriter
from training.trainer import LOG_NAME, bare_step_seconds, train, use_bf16

# The release corpus's shape: 23,742 files, mean 4.4 s, a long tail of minute-long recordings.
CORPUS_FILES = 600
MEDIAN_FRAMES = 250


def corpus_like_cache(folder: Path, files: int = CORPUS_FILES, seed: int = 0) -> None:
    """Log-normal energies in files of log-normal length (median 2.5 s, up to 5 min)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(MEDIAN_FRAMES), 1.1, files), 60, 30_000).astype(int)
    with CacheWriter(folder) as w:
        for i, n in enumerate(lengths):
            e = rng.lognormal(mean=-2.0, sigma=2.0, size=(n, frontend.N_MELS)).astype(np.float32)
            w.add(f"f{i:05d}.wav", e)


def labelled_dev_set(folder: Path, clips: int, windows: int, classes: int = 12, seed: int = 0) -> Path:
    """``clips`` noise clips of ``windows`` windows each, coloured by class; their manifest CSV."""
    rng = np.random.default_rng(seed)
    n = int(windows * frontend.DEFAULT_HOP_SECONDS * frontend.SAMPLE_RATE) + 1
    rows = []
    for i in range(clips):
        label = i % classes
        x = rng.standard_normal(n)
        # A class-specific two-tap filter gives each class its own spectral tilt.
        y = x.copy()
        y[1:] += (2.0 * label / (classes - 1) - 1.0) * x[:-1]
        path = folder / f"c{label:02d}_{i:04d}.wav"
        sf.write(path, (0.1 * y / (np.abs(y).max() + 1e-9)).astype(np.float32), frontend.SAMPLE_RATE,
                 subtype="PCM_16")
        rows.append((path.name, f"class{label}"))
    manifest = folder / "dev.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return manifest


def read_log(path: Path, per_step: int) -> dict:
    """Loop seconds and steps (first interval left out: warm-up), overheads, dev seconds."""
    steps_lines, dev_s = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "dev" in rec:
            dev_s.append(rec["dev"]["seconds"])
        else:
            steps_lines.append(rec)
    prev, loop_s, loop_steps, wait_s, ckpt_s = None, 0.0, 0, 0.0, 0.0
    for rec in steps_lines:
        if prev is not None:
            n = rec["step"] - prev
            loop_s += per_step * n / rec["triplets_per_s"]
            loop_steps += n
            wait_s += rec["data_wait_s"]
            ckpt_s += rec["checkpoint_s"]
        prev = rec["step"]
    return {"loop_s": loop_s, "steps": loop_steps, "wait_s": wait_s, "checkpoint_s": ckpt_s,
            "dev_s": dev_s}


def run_real(recipe: Path, steps: int, overrides: list[str], warmup: int, bare_steps: int) -> None:
    d = read_toml(recipe, "recipe")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "cache").mkdir()
        corpus_like_cache(tmp / "cache")
        apply_override(d, f'data.cache="{tmp / "cache"}"')
        if d.get("dev"):
            (tmp / "dev").mkdir()
            per_clip = d["dev"].get("max_windows") or 8
            # The release dev set gives 3,351 windows at max_windows = 8.
            manifest = labelled_dev_set(tmp / "dev", clips=3351 // per_clip, windows=per_clip)
            apply_override(d, f'dev.dataset="{manifest}"')
        for o in overrides:
            apply_override(d, o)
        config = from_dict(d, base_dir=recipe.parent)
        threads = config.threads or os.cpu_count()
        torch.set_num_threads(threads)
        print(f"recipe {recipe} (+ {' '.join(overrides) or 'no overrides'}); torch {torch.__version__}, "
              f"threads {threads}, bf16 {use_bf16(config, torch.device('cpu'))}, CPU flags: {cpu_flags()}")
        bare_s, bare_cpu = bare_step_seconds(config, torch.device("cpu"), warmup, bare_steps)
        b = config.batch_size
        t0 = time.perf_counter()
        train(config, tmp / "run", max_triplets=steps * b, echo=lambda _: None)
        wall = time.perf_counter() - t0
        log = read_log(tmp / "run" / LOG_NAME, b)
    loop_per_step = log["loop_s"] / max(log["steps"], 1)
    print(f"bare fwd+bwd+Adam:     {b / bare_s:6.1f} triplets/s  ({bare_s:.3f} s/step, "
          f"{bare_cpu:.2f} CPU-s/step, median of {bare_steps})")
    print(f"trainer loop:          {b / loop_per_step:6.1f} triplets/s  ({loop_per_step:.3f} s/step over "
          f"{log['steps']} steps; checkpoints {log['checkpoint_s']:.1f} s, batch waits {log['wait_s']:.1f} s)")
    print(f"  loop / bare:          {bare_s / loop_per_step:.3f}  (target >= 0.9)")
    if log["dev_s"] and config.dev:
        dev_each = float(np.median(log["dev_s"]))
        with_dev = loop_per_step + dev_each / config.dev["every"]
        print(f"with dev tracking:     {b / with_dev:6.1f} triplets/s  ({dev_each:.1f} s per measurement, "
              f"every {config.dev['every']} steps)")
        print(f"  with dev / bare:      {bare_s / with_dev:.3f}")
    print(f"real run wall time {wall:.0f} s for {steps} steps (start-up, warm start and dev set included)")
