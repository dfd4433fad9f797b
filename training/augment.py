"""Harder positives: a composed augmentation of a positive (or a contrastive view), on cached
linear mel energies, applied after the paper's rule made it.

In order, each step with its own probability:

1. **resize-crop**: a random sub-rectangle of the window, ``s_t T`` frames by ``s_f F`` bands
   with ``s_t, s_f ~ U[crop_min_scale, 1]`` at a uniform offset, stretched back to ``T x F`` by
   separable linear interpolation (a random time stretch and pitch-like band stretch);
2. **background**: ``x + g * (E(x) / E(b)) * b`` with ``b`` a window of a recording other than
   the anchor's and ``g ~ U[background_gain]`` (the energy ratio of example mixing, at a random
   gain); the positive then also holds ``b``'s recording, so mining never takes a window of it
   as a negative of this anchor;
3. **noise**: ``x * (1 + |eps|)``, ``eps ~ N(0, noise_sigma^2)`` per cell (the Gaussian-noise
   rule's multiplicative form).

Example::

    [augment]
    enabled = true
    crop_prob = 0.8
    crop_min_scale = 0.6
    background_prob = 0.5
    background_gain = [0.05, 0.5]
    noise_prob = 0.5
    noise_sigma = 0.3

The draws come from the batch's generator, so batches stay a pure function of
``(seed, rank, step)``. The anchor and negative are never changed. References: the
random-resized-crop and mixing augmentations of BYOL-A (Niizumi et al., IJCNN 2021) and of
SimCLR-style audio models (Fonseca, Jansen et al., ICASSP 2021).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from training.samplers import random_other

_FIELDS = ("enabled", "crop_prob", "crop_min_scale", "background_prob", "background_gain", "noise_prob",
           "noise_sigma")


def _stretch(x: np.ndarray, axis: int, start: float, length: float, n: int) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` from ``[start, start + length)`` onto ``n`` points."""
    src = np.arange(x.shape[axis], dtype=np.float64)
    dst = start + (np.arange(n, dtype=np.float64) + 0.5) * (length / n) - 0.5
    dst = np.clip(dst, 0.0, x.shape[axis] - 1)
    lo = np.floor(dst).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    w = (dst - lo).astype(np.float32)
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    shape = [1, 1]
    shape[axis] = n
    w = w.reshape(shape)
    return a * (1 - w) + b * w


def resize_crop(x: np.ndarray, rng: np.random.Generator, min_scale: float) -> np.ndarray:
    """A random ``s_t T x s_f F`` crop stretched back to ``x``'s shape (non-negative, finite)."""
    t, f = x.shape
    st, sf = rng.uniform(min_scale, 1.0, size=2)
    lt, lf = st * t, sf * f
    t0, f0 = rng.uniform(0.0, t - lt), rng.uniform(0.0, f - lf)
    y = _stretch(x, 0, t0, lt, t)
    return _stretch(y, 1, f0, lf, f).astype(np.float32)


@dataclass(frozen=True)
class Augment:
    enabled: bool = False
    crop_prob: float = 0.8
    crop_min_scale: float = 0.6
    background_prob: float = 0.5
    background_gain: tuple[float, float] = (0.05, 0.5)
    noise_prob: float = 0.5
    noise_sigma: float = 0.3

    def __post_init__(self):
        for name in ("crop_prob", "background_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"[augment] {name} must be in [0, 1]")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError("[augment] crop_min_scale must be in (0, 1]")
        lo, hi = self.background_gain
        if not 0.0 <= lo <= hi:
            raise ValueError("[augment] background_gain must be [low, high] with 0 <= low <= high")

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment":
        d = dict(d or {})
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise ValueError(f"[augment]: unknown keys {unknown}; allowed: {sorted(_FIELDS)}")
        if "background_gain" in d:
            d["background_gain"] = tuple(float(v) for v in d["background_gain"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["background_gain"] = list(self.background_gain)
        return d

    def positive(self, x: np.ndarray, cache, rng: np.random.Generator, anchor_rec: int
                 ) -> tuple[np.ndarray, int | None]:
        """``(augmented window, background recording or None)``."""
        y = x
        if rng.random() < self.crop_prob:
            y = resize_crop(y, rng, self.crop_min_scale)
        bg_rec = None
        if rng.random() < self.background_prob:
            _, rec, start = random_other(cache, rng, anchor_rec)
            b = cache.window(rec, start)
            e_b = float(b.sum(dtype=np.float64))
            if e_b > 0:
                gain = rng.uniform(*self.background_gain) * float(y.sum(dtype=np.float64)) / e_b
                y = (y.astype(np.float64) + gain * b).astype(np.float32)
                bg_rec = rec
        if rng.random() < self.noise_prob:
            eps = rng.normal(0.0, self.noise_sigma, size=y.shape).astype(np.float32)
            y = y * (1.0 + np.abs(eps))
        return y, bg_rec

    def apply(self, triplet, cache, rng: np.random.Generator):
        """The triplet with its positive augmented (and its recordings extended)."""
        anchor_rec = min(triplet.anchor_recordings)
        p, bg = self.positive(triplet.positive, cache, rng, anchor_rec)
        recs = triplet.positive_recordings | ({bg} if bg is not None else set())
        return triplet._replace(positive=p, positive_recordings=frozenset(recs))
