"""Shallow classifiers on window embeddings (paper section 4.4) and their fold splits.

An MLP with 1 or 2 hidden layers of 512 ReLU units and one independent sigmoid output per
class is trained on *window* embeddings, each carrying its segment's labels (Adam, binary
cross-entropy). A segment's score is the mean of its windows' sigmoid outputs. The network and
its training loop are ``audioembed.mlp``, which ``audioembed classify`` trains too; this module
adds the folds, the window caps and light supervision.

Training uses at most ``max_windows`` windows per segment (a seeded random subset; 10, the
windows of an AudioSet clip), so one 20-minute recording does not outweigh a thousand short
clips nor dominate the training time; scoring uses every window.

Inputs are standardised with the training fold's window mean and standard deviation (a
fixed first layer, see ``audioembed.mlp``).

Stopping: with ``val_fraction > 0`` the training segments are split again, group-aware and
stratified (one of ``1 / val_fraction`` folds, or of fewer when there are fewer groups: on
FSDD one speaker of the training fold), and the weights of the epoch with the lowest validation
loss are kept (stop after ``patience`` epochs without improvement, at most ``epochs``). Light
supervision has too few labels to spare, so it trains for a fixed number of epochs
(``val_fraction = 0``) or, with ``steps``, a fixed number of gradient steps whatever the
dataset's size.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from audioembed.mlp import (Standardize, build_mlp, capped_windows, mean_loss,  # noqa: F401 (API)
                            train_mlp, window_probabilities)
from training.evaluation.metrics import classifier_scores, segment_means
from training.evaluation.settings import HIDDEN_UNITS, MLPConfig  # noqa: F401 (API)

N_SPLITS = 5


def predict_segments(model: torch.nn.Module, x: torch.Tensor, seg: np.ndarray, segments: np.ndarray,
                     batch: int = 4096) -> np.ndarray:
    """Segment scores: the mean sigmoid output over each of ``segments``' windows.

    ``x`` holds the windows of exactly ``segments`` (sorted), ``seg`` their segment ids.
    """
    probs = window_probabilities(model, x, batch)
    # float64: averaged probabilities near 0 or 1 would tie in float32 and blur the ranking.
    return segment_means(probs, np.searchsorted(segments, seg), len(segments), np.float64)


def stratify_key(y: np.ndarray) -> np.ndarray:
    """One class per segment for stratification: its rarest label (works for multi-label)."""
    freq = y.sum(axis=0)
    return np.where(y, freq[None, :], np.iinfo(np.int64).max).argmin(axis=1)


def group_kfold(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, group-aware folds (sklearn ``StratifiedGroupKFold``, shuffled with ``seed``);
    fewer folds when there are fewer groups than ``n_splits``."""
    n_groups = len(np.unique(groups))
    key = stratify_key(y)
    largest = int(np.bincount(key).max())
    # sklearn refuses more folds than the largest class has members.
    n_splits = min(n_splits, n_groups, largest)
    if n_splits < 2:
        raise ValueError(f"cannot split {len(y)} segments in {n_groups} groups (largest class "
                         f"{largest}) into 2 or more stratified folds")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Small classes (fewer members than folds) are expected here; the split is still valid.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(y)), key, groups))


def outer_folds(y: np.ndarray, folds: list[str] | None, groups: list[str] | None, seed: int
                ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """The dataset's own folds (each held out once), else a stratified group-aware 5-fold split."""
    if folds is not None:
        f = np.asarray(folds)
        names = sorted(set(folds), key=lambda s: (len(s), s))
        return [(np.flatnonzero(f != n), np.flatnonzero(f == n)) for n in names], "official folds"
    g = np.asarray(groups) if groups is not None else np.arange(len(y))
    splits = group_kfold(y, g, N_SPLITS, seed)
    kind = "group-aware " if groups is not None else ""
    return splits, f"stratified {kind}{len(splits)}-fold (StratifiedGroupKFold, seed {seed})"


@dataclass
class WindowData:
    """Window embeddings with segment ids (non-decreasing), and the segment label matrix."""

    x: torch.Tensor  # (n_windows, D) float32
    seg: np.ndarray  # (n_windows,) int
    y: np.ndarray  # (n_segments, n_classes) bool
    groups: np.ndarray  # (n_segments,)

    def windows_of(self, segments: np.ndarray, cap: int | None = None,
                   rng: np.random.Generator | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Windows of ``segments`` in segment order; with ``cap``, a random ``cap`` of each."""
        mask = np.zeros(len(self.y), bool)
        mask[segments] = True
        idx = np.flatnonzero(mask[self.seg])
        if cap is not None:
            idx = idx[capped_windows(self.seg[idx], cap, rng)]
        return self.x[torch.from_numpy(idx)], self.seg[idx]

    def targets(self, seg: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.y[seg].astype(np.float32))


def fit_and_score(data: WindowData, train: np.ndarray, test: np.ndarray, config: MLPConfig
                  ) -> tuple[np.ndarray, dict]:
    """Train on segments ``train`` (optionally with an inner validation split), score ``test``."""
    rng = np.random.default_rng(config.seed)
    fit, val, stopping = train, None, "fixed steps" if config.steps else "fixed epochs"
    if config.val_fraction > 0:
        n_inner = max(2, round(1 / config.val_fraction))
        try:
            inner_fit, inner_val = group_kfold(data.y[train], data.groups[train], n_inner, config.seed)[0]
        except ValueError as exc:
            # Too few training segments or groups to hold some out: train for the full epochs,
            # and say so in the fold's log.
            stopping = f"fixed epochs (no validation split: {exc})"
        else:
            fit, val_seg = train[inner_fit], train[inner_val]
            xv, sv = data.windows_of(val_seg, config.max_windows, rng)
            val = (xv, data.targets(sv))
            stopping = "early stopping"
    xf, sf = data.windows_of(fit, config.max_windows, rng)
    model, log = train_mlp(xf, data.targets(sf), config, val)
    xt, st = data.windows_of(test)
    test = np.sort(test)
    scores = predict_segments(model, xt, st, test)
    result = classifier_scores(data.y[test], scores)
    return scores, {**result, **log, "stopping": stopping, "n_train": len(fit), "n_test": len(test)}


def _summarise(runs: list[dict], name: str = "folds") -> dict:
    out = {name: runs}
    for key in ("map", "accuracy"):
        vals = [f[key] for f in runs if key in f]
        if vals:
            out[key] = float(np.mean(vals))
            out[f"{key}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


def cross_validate(data: WindowData, splits: list[tuple[np.ndarray, np.ndarray]], config: MLPConfig,
                   log: Callable[[str], None] = lambda s: None) -> dict:
    """Per-fold classifier mAP (and accuracy); the summary is the mean and sd over folds."""
    per_fold = []
    for k, (train, test) in enumerate(splits, 1):
        t0 = time.perf_counter()
        _, res = fit_and_score(data, train, test, config)
        per_fold.append(res)
        acc = f", accuracy {res['accuracy']:.3f}" if "accuracy" in res else ""
        log(f"classifier {config.hidden_layers}-layer fold {k}/{len(splits)}: mAP {res['map']:.3f}"
            f"{acc} ({res['epochs_run']} epochs, {time.perf_counter() - t0:.1f} s)")
    return _summarise(per_fold)


def light_split(y: np.ndarray, pool: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` segments of each class drawn from ``pool`` (multi-label picks are
    pooled, so a segment drawn for one class also counts for its other labels' training)."""
    chosen = np.zeros(len(y), bool)
    for c in range(y.shape[1]):
        pos = pool[y[pool, c]]
        chosen[rng.choice(pos, size=min(per_class, len(pos)), replace=False)] = True
    return np.flatnonzero(chosen)


def light_supervision(data: WindowData, splits: list[tuple[np.ndarray, np.ndarray]], config: MLPConfig,
                      per_class: int = 20, trials: int = 3, seed: int = 0,
                      log: Callable[[str], None] = lambda s: None) -> dict:
    """Table 3: train on ``per_class`` labeled segments per class, mean and sd of the mAP over
    ``trials`` seeded draws.

    Trial ``t`` draws its training segments from the training part of outer split ``t`` and
    tests on that split's test part: the test sets are the fully supervised classifier's, so the
    two are comparable, and groups (speakers, packages) never straddle training and test.
    """
    rng = np.random.default_rng(seed)
    per_trial = []
    for t in range(trials):
        pool, test = splits[t % len(splits)]
        train = light_split(data.y, pool, per_class, rng)
        cfg = MLPConfig(**{**config.to_dict(), "seed": config.seed + t})
        _, res = fit_and_score(data, train, test, cfg)
        per_trial.append({**res, "split": t % len(splits)})
        log(f"light supervision {config.hidden_layers}-layer trial {t + 1}/{trials}: mAP {res['map']:.3f}")
    return {**_summarise(per_trial, "trials"), "per_class": per_class}
