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

The same embeddings also give the triplet loss, active-triplet fraction and mean distances on
fixed *labelled* dev triplets (``triplets`` of them, drawn once with the seed): anchor and
positive are windows of two different clips that share a label, the negative a window of a clip
that shares none. Unlike the training loss, whose triplets get harder as mining and the model
improve, this one is measured on the same triplets at every step, and on semantic rather than
label-free similarity.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from audioembed import frontend
from audioembed.errors import AudioembedError
from audioembed.api import collect_features, embed_windows, iter_features
from training.evaluation.datasets import load_dataset
from training.evaluation.metrics import qbe_map, segment_means
from training.losses import DEFAULT_MARGIN, triplet_loss


class DevDataError(AudioembedError, RuntimeError):
    """A ``[dev]`` dataset none of whose clips could be read."""


def label_triplets(y: np.ndarray, seg: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``(m, 3)`` window indices (anchor, positive, negative), ``m <= n``: the positive from
    another clip sharing a label with the anchor's, the negative from a clip sharing none.
    Anchors whose clip has no such partner are skipped."""
    rng = np.random.default_rng(seed)
    yf = y.astype(np.float32)
    overlap = (yf @ yf.T) > 0  # (segments, segments): the two clips share a label
    disjoint = ~overlap
    shares = overlap & ~np.eye(len(y), dtype=bool)
    starts = np.searchsorted(seg, np.arange(len(y)))
    counts = np.bincount(seg, minlength=len(y))

    def window_of(segment: int) -> int:
        return int(starts[segment] + rng.integers(counts[segment]))

    out = []
    for anchor in rng.integers(len(seg), size=n):
        pos, neg = np.flatnonzero(shares[seg[anchor]]), np.flatnonzero(disjoint[seg[anchor]])
        pos, neg = pos[counts[pos] > 0], neg[counts[neg] > 0]
        if len(pos) and len(neg):
            out.append((int(anchor), window_of(rng.choice(pos)), window_of(rng.choice(neg))))
    return np.array(out, np.int64).reshape(-1, 3)


def spaced(n: int, k: int) -> np.ndarray:
    """Indices of at most ``k`` evenly spaced items of ``n`` (all of them when ``k`` is 0)."""
    if k <= 0 or n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


class DevQbE:
    """The dev set's windows, held as fp16 log-mel, and the QbE mAP of a model on them."""

    def __init__(self, dataset: str, data_root: str | None = None, max_windows: int = 0,
                 batch_size: int = 256, draws: int = 5, seed: int = 0,
                 triplets: int = 4096, margin: float = DEFAULT_MARGIN, log=print) -> None:
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
            raise DevDataError(f"dev: no clip of {dataset} could be read")
        self.name = ds.name
        self.windows = torch.cat(parts)
        self.seg = np.concatenate(seg)
        subset = ds.subset(kept)
        self.y, self.classes = subset.label_matrix(), subset.classes
        self.n_segments = len(subset)
        self.batch_size, self.draws, self.seed = batch_size, draws, seed
        self.triplets = torch.from_numpy(label_triplets(self.y, self.seg, triplets, seed))
        self.margin = margin
        log(f"dev: {self.name}, {self.n_segments} clips, {len(self.windows)} windows "
            f"(at most {max_windows or 'all'} per clip), prepared in {time.perf_counter() - t0:.0f} s")

    def embed(self, model: torch.nn.Module, device: torch.device, autocast=None) -> np.ndarray:
        """Window embeddings, with ``model`` in eval mode (its mode is restored after)."""
        was_training = model.training
        model.eval()
        try:
            with autocast or nullcontext():
                return embed_windows(model, self.windows, self.batch_size, device)
        finally:
            model.train(was_training)

    def __call__(self, model: torch.nn.Module, device: torch.device, autocast=None) -> dict:
        t0 = time.perf_counter()
        emb = self.embed(model, device, autocast)
        q = qbe_map(segment_means(emb, self.seg, self.n_segments), self.y, self.classes,
                    draws=self.draws, seed=self.seed)
        out = {"dataset": self.name, "qbe_map": q["map"], "qbe_sd": q["sd"], "chance": q["chance"],
               "windows": len(self.windows)}
        if len(self.triplets):
            e = torch.from_numpy(emb)
            loss, stats = triplet_loss(*(e[self.triplets[:, k]] for k in range(3)), self.margin)
            out.update(triplet_loss=loss.item(), active=stats["active"].item(),
                       d_ap=stats["d_ap"].item(), d_an=stats["d_an"].item(),
                       triplets=len(self.triplets))
        return {**out, "seconds": round(time.perf_counter() - t0, 1)}
