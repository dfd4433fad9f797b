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
   rule's multiplicative form);

then the recording-conditions steps, which imitate another microphone, room and level (each off
unless its probability is set):

4. **eq**: every band scaled by ``10^(g_f / 10)``, with ``g_f`` in dB a spectral tilt
   ``u * tilt_db * (f / (F - 1) - 1/2)``, ``u ~ U[-1, 1]``, plus a smooth curve: three
   cosines over the band axis with random phases, periods of ``F``, ``F/2`` and ``F/3`` bands
   and amplitudes ``~ U[0, eq_db / 3]``;
5. **gain**: the whole window scaled by ``10^(g / 10)``, ``g ~ U[-gain_db, gain_db]`` (it moves
   the window against the log offset of the frontend, as a quieter or louder recording does);
6. **mask**: one run of up to ``time_mask_frames`` frames and one of up to ``freq_mask_bands``
   bands set to zero energy (SpecAugment, Park et al., Interspeech 2019).

Example::

    [augment]
    enabled = true
    crop_prob = 0.8
    crop_min_scale = 0.6
    background_prob = 0.5
    background_gain = [0.05, 0.5]
    noise_prob = 0.5
    noise_sigma = 0.3

and, for recording conditions alone::

    [augment]
    enabled = true
    crop_prob = 0.0
    background_prob = 0.0
    noise_prob = 0.0
    eq_prob = 0.8
    gain_prob = 0.8
    mask_prob = 0.5

A step whose probability is 0 draws nothing, so adding steps keeps earlier configurations'
batches bit-identical. The draws come from the batch's generator, so batches stay a pure function of
``(seed, rank, step)``. The anchor and negative are never changed. References: the
random-resized-crop and mixing augmentations of BYOL-A (Niizumi et al., IJCNN 2021) and of
SimCLR-style audio models (Fonseca, Jansen et al., ICASSP 2021).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from training.samplers import random_other

_FIELDS = ("enabled", "crop_prob", "crop_min_scale", "background_prob", "background_gain", "noise_prob",
           "noise_sigma", "eq_prob", "tilt_db", "eq_db", "gain_prob", "gain_db", "mask_prob",
           "time_mask_frames", "freq_mask_bands")


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


def band_gains_db(rng: np.random.Generator, bands: int, tilt_db: float, eq_db: float) -> np.ndarray:
    """A random smooth gain curve over ``bands`` mel bands, in dB: tilt plus three cosines."""
    pos = np.arange(bands, dtype=np.float64) / max(bands - 1, 1)
    gains = rng.uniform(-1.0, 1.0) * tilt_db * (pos - 0.5)
    for k in (1, 2, 3):
        gains += rng.uniform(0.0, eq_db / 3) * np.cos(2 * np.pi * k * pos + rng.uniform(0, 2 * np.pi))
    return gains


def mask_runs(x: np.ndarray, rng: np.random.Generator, max_frames: int, max_bands: int) -> np.ndarray:
    """``x`` with one run of ``0..max_frames`` frames and one of ``0..max_bands`` bands zeroed."""
    y = x.copy()
    t, f = y.shape
    n = int(rng.integers(0, min(max_frames, t) + 1))
    t0 = int(rng.integers(0, t - n + 1))
    y[t0:t0 + n, :] = 0.0
    n = int(rng.integers(0, min(max_bands, f) + 1))
    f0 = int(rng.integers(0, f - n + 1))
    y[:, f0:f0 + n] = 0.0
    return y


@dataclass(frozen=True)
class Augment:
    enabled: bool = False
    crop_prob: float = 0.8
    crop_min_scale: float = 0.6
    background_prob: float = 0.5
    background_gain: tuple[float, float] = (0.05, 0.5)
    noise_prob: float = 0.5
    noise_sigma: float = 0.3
    eq_prob: float = 0.0
    tilt_db: float = 10.0
    eq_db: float = 6.0
    gain_prob: float = 0.0
    gain_db: float = 12.0
    mask_prob: float = 0.0
    time_mask_frames: int = 16
    freq_mask_bands: int = 8

    def __post_init__(self):
        for name in ("tilt_db", "eq_db", "gain_db", "time_mask_frames", "freq_mask_bands"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"[augment] {name} must be >= 0")
        for name in ("crop_prob", "background_prob", "noise_prob", "eq_prob", "gain_prob", "mask_prob"):
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
        return self._recording_conditions(y, rng), bg_rec

    def _recording_conditions(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.eq_prob > 0 and rng.random() < self.eq_prob:
            gains = band_gains_db(rng, y.shape[1], self.tilt_db, self.eq_db)
            y = y * (10.0 ** (gains / 10.0)).astype(np.float32)
        if self.gain_prob > 0 and rng.random() < self.gain_prob:
            y = y * np.float32(10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 10.0))
        if self.mask_prob > 0 and rng.random() < self.mask_prob:
            y = mask_runs(y, rng, self.time_mask_frames, self.freq_mask_bands)
        return y.astype(np.float32, copy=False)

    def apply(self, triplet, cache, rng: np.random.Generator):
        """The triplet with its positive augmented (and its recordings extended)."""
        anchor_rec = min(triplet.anchor_recordings)
        p, bg = self.positive(triplet.positive, cache, rng, anchor_rec)
        recs = triplet.positive_recordings | ({bg} if bg is not None else set())
        return triplet._replace(positive=p, positive_recordings=frozenset(recs))
