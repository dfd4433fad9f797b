"""Query-by-example mAP on a labeled development set, measured during training.

The recipe's ``[dev]`` table names a dataset (``training.evaluation.datasets.load_dataset``:
``debian-sfx``, ``fsdd``, a CSV, ...). Its log-mel windows are computed once when the run starts
and kept in memory; every ``every`` steps the main process embeds them with the model in eval
mode and logs ``{"step", "dev": {"qbe_map", ...}}`` to the run's JSONL log, so a curve of dev
QbE against triplets seen comes with every run at no extra command.

The figure is the evaluator's QbE protocol (segment means of window embeddings, cosine
ranking, the same class-balanced draws and seed) on at most ``max_windows`` evenly spaced
windows per clip (0: all). With a cap it tracks, but need not equal, the full
``python -m training evaluate`` number, which stays the one to report.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from audioembed import frontend
from audioembed.api import collect_features, iter_features
from training.evaluation.datasets import load_dataset
from training.evaluation.metrics import qbe_map, segment_means


def spaced(n: int, k: int) -> np.ndarray:
    """Indices of at most ``k`` evenly spaced items of ``n`` (all of them when ``k`` is 0)."""
    if k <= 0 or n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


class DevQbE:
    """The dev set's windows, held as fp16 log-mel, and the QbE mAP of a model on them."""

    def __init__(self, dataset: str, data_root: str | None = None, max_windows: int = 0,
                 batch_size: int = 256, draws: int = 5, seed: int = 0,
                 log=print) -> None:
        t0 = time.perf_counter()
        ds = load_dataset(dataset, data_root)
        parts, seg, kept = [], [], np.zeros(len(ds), bool)
        for index, _, got in collect_features(iter_features(ds.paths, None,
                                                            frontend.DEFAULT_HOP_SECONDS)):
            if isinstance(got, Exception):
                log(f"dev: skipped {got}")
                continue
            windows = got[0][torch.from_numpy(spaced(len(got[0]), max_windows))]
            parts.append(windows.to(torch.float16))
            seg.append(np.full(len(windows), kept.sum(), np.int64))
            kept[index] = True
        if not parts:
            raise RuntimeError(f"dev: no clip of {dataset} could be read")
        self.name = ds.name
        self.windows = torch.cat(parts)
        self.seg = np.concatenate(seg)
        subset = ds.subset(kept)
        self.y, self.classes = subset.label_matrix(), subset.classes
        self.n_segments = len(subset)
        self.batch_size, self.draws, self.seed = batch_size, draws, seed
        log(f"dev: {self.name}, {self.n_segments} clips, {len(self.windows)} windows "
            f"(at most {max_windows or 'all'} per clip), prepared in {time.perf_counter() - t0:.0f} s")

    @torch.no_grad()
    def embed(self, model: torch.nn.Module, device: torch.device, autocast=None) -> np.ndarray:
        """Window embeddings, with ``model`` in eval mode (its mode is restored after)."""
        was_training = model.training
        model.eval()
        out = []
        try:
            for a in range(0, len(self.windows), self.batch_size):
                x = self.windows[a:a + self.batch_size].to(device).float().unsqueeze(1)
                with autocast or nullcontext():
                    out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
        finally:
            model.train(was_training)
        return torch.cat(out).numpy()

    def __call__(self, model: torch.nn.Module, device: torch.device, autocast=None) -> dict:
        t0 = time.perf_counter()
        emb = self.embed(model, device, autocast)
        q = qbe_map(segment_means(emb, self.seg, self.n_segments), self.y, self.classes,
                    draws=self.draws, seed=self.seed)
        return {"dataset": self.name, "qbe_map": q["map"], "qbe_sd": q["sd"], "chance": q["chance"],
                "windows": len(self.windows), "seconds": round(time.perf_counter() - t0, 1)}
