"""One evaluation: window embeddings -> QbE retrieval, shallow classifiers, light supervision."""
from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch

from audioembed import __version__ as audioembed_version
from audioembed import frontend
from audioembed.errors import AudioembedError
from training.evaluation import classifiers as clf
from training.evaluation.datasets import DatasetError, LabeledDataset, load_dataset
from training.evaluation.features import DEFAULT_CACHE_DIR, WindowEmbeddings, embed_dataset
from training.evaluation.metrics import qbe_map, segment_means
from training.evaluation.settings import EvalSettings

RESULTS_SCHEMA = "audioembed-eval/1"
LAYERS = (1, 2)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _window_data(ds: LabeledDataset, we: WindowEmbeddings, seed: int):
    """``ds`` (already the kept subset) as classifier inputs, with its outer splits."""
    y = ds.label_matrix()
    groups = np.asarray(ds.groups) if ds.groups is not None else np.arange(len(ds))
    data = clf.WindowData(torch.from_numpy(np.ascontiguousarray(we.emb, dtype=np.float32)),
                          we.seg.astype(np.int64), y, groups)
    splits, split_kind = clf.outer_folds(y, ds.folds, ds.groups, seed)
    return data, splits, split_kind


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
    data, splits, split_kind = _window_data(ds, we, settings.seed)
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


class EvaluationError(AudioembedError, ValueError):
    """An evaluation that cannot run: the dataset, the model or the protocol; the message says which."""


def evaluate_model(model: str, dataset: str, settings: EvalSettings = EvalSettings(), *,
                   data_root=None, device: str | None = None, batch_size: int = 64,
                   cache_dir=DEFAULT_CACHE_DIR, log: Callable[[str], None] = _stderr,
                   backend: str = "torch", layer: str = "embedding") -> dict:
    """``python -m training evaluate`` as a function: load ``dataset`` (any ``--dataset``), embed
    it with ``model`` (any ``--model``, window embeddings cached in ``cache_dir``; None: no
    cache; ``backend`` and ``layer`` as in ``audioembed.embed``), and return
    :func:`evaluate_embeddings`'s results with a ``timing`` entry."""
    t0 = time.perf_counter()
    try:
        ds = load_dataset(dataset, data_root)
    except (DatasetError, OSError) as exc:
        raise EvaluationError(str(exc)) from exc
    log(f"{ds.name}: {len(ds)} segments, {len(ds.classes)} classes ({ds.source})")
    try:
        we = embed_dataset(ds, model, device=device, batch_size=batch_size, cache_dir=cache_dir, log=log,
                           backend=backend, layer=layer)
    except (ValueError, RuntimeError, OSError) as exc:
        raise EvaluationError(f"cannot embed {ds.name} with {model}: {exc}") from exc
    t_embed = time.perf_counter() - t0
    try:
        results = evaluate_embeddings(ds, we, settings, log=log)
    except ValueError as exc:  # e.g. too few segments per class to retrieve or to split
        raise EvaluationError(f"cannot evaluate on {ds.name}: {exc}") from exc
    results["timing"] = {"embedding_s": round(t_embed, 1), "embeddings_from_cache": we.from_cache,
                         "total_s": round(time.perf_counter() - t0, 1)}
    return results


def classifier_data(model: str, dataset: str, settings: EvalSettings = EvalSettings(), *,
                    data_root=None, cache_dir=DEFAULT_CACHE_DIR, log: Callable[[str], None] = _stderr,
                    layer: str = "embedding"):
    """``(WindowData, outer splits, split description)`` of ``dataset`` embedded by ``model``
    (``layer`` as in ``evaluate_model``), exactly as :func:`evaluate_model` builds them: for
    protocols beyond the standard ones (e.g. light supervision with other classifier sizes)."""
    ds = load_dataset(dataset, data_root)
    we = embed_dataset(ds, model, cache_dir=cache_dir, log=log, layer=layer)
    return _window_data(ds.subset(we.kept), we, settings.seed)


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
