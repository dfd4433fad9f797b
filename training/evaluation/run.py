"""One evaluation: window embeddings -> QbE retrieval, shallow classifiers, light supervision."""
from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from audioembed import __version__ as audioembed_version
from audioembed import frontend
from training.evaluation import classifiers as clf
from training.evaluation.datasets import LabeledDataset
from training.evaluation.features import WindowEmbeddings
from training.evaluation.metrics import qbe_map, segment_means

RESULTS_SCHEMA = "audioembed-eval/1"
LAYERS = (1, 2)


@dataclass
class EvalSettings:
    seed: int = 0
    qbe_max_per_class: int = 100
    qbe_draws: int = 5
    classifiers: bool = True
    epochs: int = 50
    # 3 stopped some folds at a validation-loss dip in epoch 1-2 (debian-sfx, first release:
    # 2-layer fold mAP 0.084 at patience 3, 0.235 at 10, with a later, lower minimum).
    patience: int = 10
    val_fraction: float = 0.1
    batch_size: int = 256
    lr: float = 1e-3
    light_per_class: int = 20
    light_trials: int = 3
    light_steps: int = 300
    light_batch_size: int = 32
    max_windows: int = 10

    def mlp(self, layers: int) -> clf.MLPConfig:
        return clf.MLPConfig(hidden_layers=layers, epochs=self.epochs, batch_size=self.batch_size,
                             lr=self.lr, val_fraction=self.val_fraction, patience=self.patience,
                             max_windows=self.max_windows, seed=self.seed)

    def light_mlp(self, layers: int) -> clf.MLPConfig:
        return clf.MLPConfig(hidden_layers=layers, steps=self.light_steps,
                             batch_size=self.light_batch_size, lr=self.lr, val_fraction=0.0,
                             max_windows=self.max_windows, seed=self.seed)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evaluate_embeddings(dataset: LabeledDataset, we: WindowEmbeddings, settings: EvalSettings,
                        log: Callable[[str], None] = _stderr) -> dict:
    """Every metric of the spec on precomputed window embeddings; returns the results dict."""
    ds = dataset.subset(we.kept)
    y = ds.label_matrix()
    classes = ds.classes
    t0 = time.perf_counter()
    seg_emb = segment_means(we.emb, we.seg, len(ds))
    qbe = qbe_map(seg_emb, y, classes, max_per_class=settings.qbe_max_per_class,
                  draws=settings.qbe_draws, seed=settings.seed)
    log(f"QbE mAP {qbe['map']:.3f} (chance {qbe['chance']:.3f}), {time.perf_counter() - t0:.1f} s")
    results = {
        "schema": RESULTS_SCHEMA,
        "model": we.model,
        "dataset": {**ds.summary(), "classes": classes, "unreadable": we.errors,
                    "n_windows": int(len(we.emb))},
        "embedding_dim": int(we.emb.shape[1]),
        "qbe": qbe,
        "settings": asdict(settings),
        "environment": {"audioembed": audioembed_version, "torch": torch.__version__,
                        "python": platform.python_version(), "threads": torch.get_num_threads(),
                        "frontend": frontend.config()},
    }
    if not settings.classifiers:
        return results
    groups = np.asarray(ds.groups) if ds.groups is not None else np.arange(len(ds))
    data = clf.WindowData(torch.from_numpy(np.ascontiguousarray(we.emb, dtype=np.float32)),
                          we.seg.astype(np.int64), y, groups)
    splits, split_kind = clf.outer_folds(y, ds.folds, ds.groups, settings.seed)
    results["classifier"] = {"split": split_kind, "stopping": (
        f"early stopping on a group-aware inner validation split (1 of {round(1 / settings.val_fraction)}"
        f" folds of the training segments, fewer with fewer groups), patience {settings.patience}, "
        f"at most {settings.epochs} epochs, at most {settings.max_windows} windows per segment")}
    for layers in LAYERS:
        results["classifier"][str(layers)] = clf.cross_validate(data, splits, settings.mlp(layers), log)
    results["light_supervision"] = {"stopping": f"fixed {settings.light_steps} steps of "
                                                f"{settings.light_batch_size} windows",
                                    "test": "trial t tests on outer split t's test part"}
    for layers in LAYERS:
        results["light_supervision"][str(layers)] = clf.light_supervision(
            data, splits, settings.light_mlp(layers), settings.light_per_class, settings.light_trials,
            settings.seed, log)
    return results


def summary_lines(results: dict) -> list[str]:
    """The human summary printed to stdout."""
    q = results["qbe"]
    ds = results["dataset"]
    lines = [f"model {results['model']['name']}  dataset {ds['name']}  "
             f"({ds['n_segments']} segments, {ds['n_windows']} windows, {ds['n_classes']} classes, "
             f"{results['embedding_dim']}-d)",
             f"QbE mAP        {q['map']:.4f} ± {q['sd']:.4f}  (chance {q['chance']:.4f}, "
             f"{q['draws']} draws, {q['n_classes']} classes)"]
    for layers in LAYERS:
        c = results.get("classifier", {}).get(str(layers))
        if c:
            acc = f"  accuracy {c['accuracy']:.4f} ± {c['accuracy_sd']:.4f}" if "accuracy" in c else ""
            lines.append(f"classifier {layers}L  mAP {c['map']:.4f} ± {c['map_sd']:.4f}{acc}"
                         f"  ({results['classifier']['split']})")
    for layers in LAYERS:
        s = results.get("light_supervision", {}).get(str(layers))
        if s:
            acc = f"  accuracy {s['accuracy']:.4f} ± {s['accuracy_sd']:.4f}" if "accuracy" in s else ""
            lines.append(f"light sup. {layers}L  mAP {s['map']:.4f} ± {s['map_sd']:.4f}{acc}  "
                         f"({s['per_class']} per class, {len(s['trials'])} trials)")
    return lines
