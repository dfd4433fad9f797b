"""Few-shot digit classification on FSDD with ``audioembed.Classifier``, beside the evaluator.

    python examples/few_shot_fsdd.py [--data FSDD/recordings] [--model M] [--layer pooled]

The split is the evaluator's light-supervision protocol (``python -m training evaluate
--dataset fsdd``): trial t trains on 20 clips per digit drawn from the speakers of outer fold t
(group-aware, so no test speaker is heard in training) and tests on the other speakers' clips.
Per trial it prints the accuracy of the tool (``Classifier.fit`` / ``.predict``: validation
split, early stopping; the defaults of ``audioembed classify fit``) and of the evaluator's own
light-supervision classifier (fixed 300 steps, no validation split) on the same clips; the
summary gives mean ± sd over trials, the command, and the host.

Needs the training extras (``pip install -e '.[train]'``) for the evaluator's split; the
evaluator's window embeddings are cached in ~/.cache/audioembed/eval.
"""
from __future__ import annotations

import argparse
import platform
import re
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from audioembed import Classifier
from audioembed.registry import DEFAULT_MODEL
from training.evaluation import classifiers as clf
from training.evaluation.datasets import FSDD_DEFAULT, load_dataset
from training.evaluation.run import classifier_data
from training.evaluation.settings import EvalSettings


def host() -> str:
    """CPU model and the SIMD flags that decide torch's speed on it."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = sorted(set(re.findall(r"\b(avx2|avx512f|avx512_bf16|amx_bf16)\b", cpuinfo)))
    return f"{model.group(1) if model else platform.machine()}; flags {' '.join(flags) or 'none'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FSDD_DEFAULT, help="FSDD recordings/ folder")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--layer", choices=("embedding", "pooled"), default="embedding")
    parser.add_argument("--trials", type=int, default=EvalSettings.light_trials)
    parser.add_argument("--per-class", type=int, default=EvalSettings.light_per_class)
    args = parser.parse_args()

    settings = EvalSettings()
    # The evaluator's windows of FSDD (for its own classifier) and its outer splits.
    data, splits, split_kind = classifier_data(args.model, "fsdd", settings, data_root=args.data,
                                               layer=args.layer, log=lambda s: None)
    ds = load_dataset("fsdd", args.data)
    if len(ds.paths) != len(data.y):
        sys.exit(f"{args.data}: some clips could not be read; the files no longer line up with "
                 "the evaluator's segments")
    paths, labels = list(ds.paths), np.array(ds.classes)[data.y.argmax(axis=1)]
    rng = np.random.default_rng(settings.seed)  # the draws of classifiers.light_supervision
    tool, evaluator = [], []
    t0 = time.perf_counter()
    for t in range(args.trials):
        pool, test = splits[t % len(splits)]
        train = clf.light_split(data.y, pool, args.per_class, rng)
        cfg = replace(settings.light_mlp(1), seed=settings.seed + t)
        evaluator.append(clf.fit_and_score(data, train, test, cfg)[1]["accuracy"])
        c = Classifier.fit([paths[i] for i in train], labels[train].tolist(), model=args.model,
                           layer=args.layer, seed=t)
        predicted = np.array(c.predict([paths[i] for i in test]))
        tool.append(float((predicted == labels[test]).mean()))
        s = c.training
        print(f"trial {t}: {len(train)} training clips, {len(test)} test clips of "
              f"{len(set(data.groups[test]))} held-out speaker(s): classify {tool[-1]:.3f} (best "
              f"epoch {s['best_epoch']}, validation accuracy {s['val_accuracy']:.3f}), evaluator "
              f"light supervision 1L {evaluator[-1]:.3f}", flush=True)
    print(f"\nFSDD, {args.per_class} clips per digit, accuracy on held-out speakers (chance 0.100), "
          f"{args.model}, --layer {args.layer}, mean ± sd over {args.trials} trials ({split_kind}):")
    print(f"  audioembed classify (early stopping):       {np.mean(tool):.3f} ± {np.std(tool, ddof=1):.3f}")
    print(f"  evaluator light supervision, 1 hidden layer: {np.mean(evaluator):.3f} ± "
          f"{np.std(evaluator, ddof=1):.3f}")
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"host: {host()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
