"""Query-by-example retrieval mAP (paper section 4.3) and the classifier metrics of section 4.4."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

QBE_MAX_PER_CLASS = 100
QBE_DRAWS = 5


def segment_means(window_emb: np.ndarray, seg: np.ndarray, n_segments: int, dtype=np.float32
                  ) -> np.ndarray:
    """Mean of each segment's window rows; ``seg`` is non-decreasing and covers every segment.
    Summed in float64 (a segment may have thousands of windows)."""
    starts = np.searchsorted(seg, np.arange(n_segments))
    counts = np.diff(np.append(starts, len(seg)))
    if (counts == 0).any():
        raise ValueError("every segment needs at least one window")
    sums = np.add.reduceat(window_emb.astype(np.float64, copy=False), starts, axis=0)
    return (sums / counts[:, None]).astype(dtype, copy=False)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); an all-zero row stays zero (similarity 0 to all)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def pair_ap(unit: np.ndarray, present: np.ndarray, absent: np.ndarray) -> tuple[float, float]:
    """AP and chance level of one query-by-example trial.

    Targets are all unordered pairs within ``present``; non-targets all (present, absent)
    pairs. Pairs are ranked by cosine similarity (``unit`` rows are unit-norm), i.e. by
    increasing cosine distance.
    """
    p, a = unit[present], unit[absent]
    iu = np.triu_indices(len(present), k=1)
    target = (p @ p.T)[iu]
    other = (p @ a.T).ravel()
    scores = np.concatenate([target, other])
    truth = np.concatenate([np.ones(len(target), bool), np.zeros(len(other), bool)])
    return float(average_precision_score(truth, scores)), len(target) / len(truth)


def qbe_map(seg_emb: np.ndarray, y: np.ndarray, classes: list[str] | None = None, *,
            max_per_class: int = QBE_MAX_PER_CLASS, draws: int = QBE_DRAWS, seed: int = 0) -> dict:
    """Query-by-example mAP over classes, averaged over ``draws`` seeded draws.

    Per class and draw: up to ``max_per_class`` segments where the class is present, and as many
    (at most as many as exist) where it is absent. Classes with fewer than two present segments
    (no target pair) or no absent segment are skipped. ``chance`` is the fraction of target
    pairs, i.e. the AP of a random ranking, per class, averaged like the mAP.
    """
    unit = unit_rows(seg_emb)
    y = np.asarray(y, dtype=bool)
    names = classes or [str(c) for c in range(y.shape[1])]
    usable = [c for c in range(y.shape[1]) if y[:, c].sum() >= 2 and (~y[:, c]).any()]
    if not usable:
        raise ValueError("query-by-example needs a class with at least two segments and one without")
    rng = np.random.default_rng(seed)
    ap = np.empty((draws, len(usable)))
    chance = np.empty_like(ap)
    for d in range(draws):
        for j, c in enumerate(usable):
            pos, neg = np.flatnonzero(y[:, c]), np.flatnonzero(~y[:, c])
            k = min(max_per_class, len(pos))
            present = rng.choice(pos, size=k, replace=False)
            absent = rng.choice(neg, size=min(k, len(neg)), replace=False)
            ap[d, j], chance[d, j] = pair_ap(unit, present, absent)
    per_draw = ap.mean(axis=1)
    return {
        "map": float(per_draw.mean()),
        "sd": float(per_draw.std(ddof=1)) if draws > 1 else 0.0,
        "chance": float(chance.mean()),
        "per_draw": per_draw.tolist(),
        "per_class": {names[c]: float(v) for c, v in zip(usable, ap.mean(axis=0))},
        "n_classes": len(usable),
        "max_per_class": max_per_class,
        "draws": draws,
        "seed": seed,
    }


def classifier_scores(y: np.ndarray, scores: np.ndarray) -> dict:
    """Macro AP over the classes with at least one positive, and top-1 accuracy if single-label."""
    y = np.asarray(y, dtype=bool)
    has_pos = y.any(axis=0)
    if not has_pos.any():
        raise ValueError("no class has a positive segment in this test set")
    out = {"map": float(average_precision_score(y[:, has_pos], scores[:, has_pos], average="macro")),
           "n_classes": int(has_pos.sum())}
    if (y.sum(axis=1) == 1).all():
        out["accuracy"] = float((scores.argmax(axis=1) == y.argmax(axis=1)).mean())
    return out
