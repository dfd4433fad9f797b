"""Window embeddings of a dataset, from a model or the log-mel baseline, cached as ``.npz``.

``logmel`` is the paper's baseline: each 96x64 log-mel window flattened to 6144 dimensions.
Any other model name goes to ``audioembed.loading.cached_model`` (registry name, folder,
``hf-hub:...``); windows of consecutive files share forward batches (``iter_embeddings``).

The cache key is the model's weights (sha256, or ``logmel`` plus the frontend config), the
dataset fingerprint (paths, sizes, mtimes, labels) and the hop, so a retrained model or a
changed file is never served stale results.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from audioembed import frontend
from audioembed.outputs import atomic_write
from audioembed.api import (DEFAULT_BATCH_SIZE, collect_features, iter_embeddings, iter_features,
                            readout_network)
from audioembed.backends import resolve_backend
from audioembed.loading import cached_model

from training.evaluation.datasets import LabeledDataset

LOGMEL = "logmel"
DEFAULT_CACHE_DIR = Path("~/.cache/audioembed/eval")
CACHE_FORMAT = 1


@dataclass
class WindowEmbeddings:
    """``emb`` (n_windows, D) float32 with ``seg`` (n_windows,) indices into ``kept`` segments."""

    emb: np.ndarray
    seg: np.ndarray
    kept: np.ndarray  # bool, one per dataset segment: false where the audio could not be read
    errors: list[str] = field(default_factory=list)
    model: dict = field(default_factory=dict)
    cache_path: str | None = None
    from_cache: bool = False


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Progress:
    """``done/total`` lines on stderr, at most every ``every`` seconds."""

    def __init__(self, total: int, what: str, log: Callable[[str], None], every: float = 10.0):
        self.total, self.what, self.log, self.every = total, what, log, every
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every or done == self.total:
            self.last = now
            self.log(f"{self.what}: {done}/{self.total} files ({now - self.t0:.0f} s)")


def model_descriptor(model: str, device: str | None = None, backend: str = "torch",
                     layer: str = "embedding") -> tuple[dict, object]:
    """``({name, sha256, source, dim[, backend, layer]}, network or None)`` for ``--model``: the
    network that gives the windows' vectors (``backend`` and ``layer`` as in ``audioembed.embed``)."""
    if model == LOGMEL:
        return {"name": LOGMEL, "sha256": None, "source": "log-mel baseline (paper 4.3)",
                "dim": frontend.WINDOW_FRAMES * frontend.N_MELS}, None
    base = cached_model(model, device)
    info = getattr(base, "info", {}) or {}
    net = readout_network(resolve_backend(base, device, backend, pooled=layer == "pooled"), layer)
    desc = {"name": model, "sha256": info.get("sha256"), "source": info.get("source", model),
            "dim": int(net.embedding_dim)}
    # Recorded (and part of the cache key) only when not the defaults, so results and caches
    # made before these options existed keep their meaning.
    desc.update({k: v for k, v in (("backend", backend), ("layer", layer))
                 if v != {"backend": "torch", "layer": "embedding"}[k]})
    return desc, net


def cache_path(cache_dir: Path, model: dict, dataset: LabeledDataset, hop_seconds: float) -> Path:
    weights = model["sha256"] or json.dumps(frontend.config(), sort_keys=True)
    key = {"format": CACHE_FORMAT, "model": model["name"] if not model["sha256"] else None,
           "weights": weights, "data": dataset.fingerprint(), "hop": hop_seconds}
    key.update({k: model[k] for k in ("backend", "layer") if k in model})
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    tag = LOGMEL if model["name"] == LOGMEL else (model["sha256"] or "model")[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset.name)
    return Path(cache_dir).expanduser() / f"{tag}_{safe}_{digest}.npz"


def _save(path: Path, we: WindowEmbeddings) -> None:
    atomic_write(path, lambda f: np.savez(f, emb=we.emb, seg=we.seg, kept=we.kept,
                                          errors=np.array(we.errors, dtype=str)))


def _load(path: Path, n_segments: int) -> WindowEmbeddings | None:
    try:
        with np.load(path) as z:
            we = WindowEmbeddings(z["emb"], z["seg"], z["kept"], [str(e) for e in z["errors"]])
    except (OSError, KeyError, ValueError) as exc:
        _stderr(f"warning: ignoring unreadable cache {path} ({exc}); recomputing")
        return None
    if len(we.kept) != n_segments:
        _stderr(f"warning: cache {path} does not match the dataset; recomputing")
        return None
    return we


def _window_rows(items: Iterable, net, batch_size: int) -> Iterable[tuple[int, object]]:
    """``(index, (n, D) array or error)`` per input; log-mel windows are flattened."""
    if net is None:
        for index, _, feats in collect_features(items):
            yield index, feats if isinstance(feats, Exception) else feats[0].reshape(len(feats[0]), -1).numpy()
    else:
        for res in iter_embeddings(items, net, batch_size):
            yield res.index, res.error if res.error is not None else res.window_embeddings


def embed_dataset(dataset: LabeledDataset, model: str, *, device: str | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, hop_seconds: float = frontend.DEFAULT_HOP_SECONDS,
            cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
            log: Callable[[str], None] = _stderr, backend: str = "torch",
            layer: str = "embedding") -> WindowEmbeddings:
    """Window embeddings of every segment (unreadable files are dropped and listed in ``errors``).

    ``cache_dir=None`` disables the cache (neither read nor written). ``backend`` and ``layer``
    choose the network and its readout, as in ``audioembed.embed``.
    """
    desc, net = model_descriptor(model, device, backend, layer)
    path = cache_path(Path(cache_dir), desc, dataset, hop_seconds) if cache_dir is not None else None
    if path is not None and path.is_file():
        we = _load(path, len(dataset))
        if we is not None:
            log(f"window embeddings from cache {path}")
            we.model, we.cache_path, we.from_cache = desc, str(path), True
            return we
    parts, seg_ids, kept, errors = [], [], np.zeros(len(dataset), bool), []
    progress = Progress(len(dataset), f"embedding ({model})", log)
    items = iter_features(dataset.paths, None, hop_seconds)
    for done, (index, rows) in enumerate(_window_rows(items, net, batch_size), 1):
        if isinstance(rows, Exception):
            errors.append(str(rows))
        else:
            parts.append(np.asarray(rows, dtype=np.float32))
            seg_ids.append(index)
            kept[index] = True
        progress.update(done)
    if not parts:
        raise RuntimeError(f"no file of {dataset.name} could be read; first error: {errors[0]}")
    for e in errors:
        log(f"warning: skipped {e}")
    # Segment ids are renumbered over kept segments, so they index the kept subset's rows.
    counts = np.array([len(p) for p in parts])
    seg = np.repeat(np.arange(len(parts)), counts).astype(np.int32)
    we = WindowEmbeddings(np.concatenate(parts), seg, kept, errors, desc, str(path) if path else None)
    if path is not None:
        _save(path, we)
        log(f"cached window embeddings in {path}")
    return we


# The experiments layer (training/experiments/figures.py) imports it by its former name.
extract = embed_dataset
