"""Triplet samplers of Jansen et al. (ICASSP 2018), section 3.2, in the linear mel-energy domain.

Every sampler draws from a :class:`~training.feature_cache.FeatureCache` with a numpy
``Generator`` and returns a :class:`Triplet` of ``(WINDOW_FRAMES, N_MELS)`` float32 *energy*
windows; ``frontend.log_mel`` is applied later, on the batch, so noise, shifts and mixing act on
energies as the paper defines them.

Anchors (shared by all samplers but explicit-label): a file uniformly at random, then a start
frame uniformly at random among the file's full windows (``0`` for a file shorter than one
window, which is padded with zero energy). Uniform per file, not per frame, is the paper-like
"example" choice: a long recording does not dominate the anchors. The start is expressed in
its recording's frames so temporal proximity can reach neighbouring files of the recording.

Sampling is a pure function of ``(seed, rank, step)``: :func:`batch_rng` seeds one generator
per step, so a resumed run draws exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from audioembed import frontend
from training.feature_cache import FeatureCache

T = frontend.WINDOW_FRAMES
_MAX_TRIES = 1000


class Triplet(NamedTuple):
    """One training triplet: energy windows plus what the batch miner needs to know.

    ``*_recordings`` are the recordings whose audio a window contains (two for a mixture);
    ``*_labels`` the labels of its files (``None``: unknown).
    """

    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    sampler: str
    minable: bool
    anchor_recordings: frozenset
    positive_recordings: frozenset
    negative_recordings: frozenset
    anchor_labels: frozenset | None = None
    positive_labels: frozenset | None = None
    negative_labels: frozenset | None = None


def batch_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The generator for one step's batch on one rank: a pure function of its arguments."""
    return np.random.default_rng([int(seed), int(rank), int(step)])


def _max_start(n_frames: int) -> int:
    return max(0, int(n_frames) - T)


def random_anchor(cache: FeatureCache, rng: np.random.Generator) -> tuple[int, int, int]:
    """``(file, recording, start frame within the recording)``: file uniform, start uniform."""
    f = int(rng.integers(cache.num_files))
    start = int(rng.integers(_max_start(cache.file_frames[f]) + 1))
    return f, int(cache.file_recording[f]), int(cache.file_start[f]) + start


def random_other(cache: FeatureCache, rng: np.random.Generator, exclude_rec: int,
                 accept=None) -> tuple[int, int, int]:
    """A random window (as :func:`random_anchor`) from a recording other than ``exclude_rec``."""
    if cache.num_recordings < 2:
        raise ValueError("triplet sampling needs at least two recordings in the cache")
    for _ in range(_MAX_TRIES):
        f, rec, start = random_anchor(cache, rng)
        if rec != exclude_rec and (accept is None or accept(f, rec, start)):
            return f, rec, start
    raise ValueError(f"found no acceptable negative in {_MAX_TRIES} draws; "
                     "is nearly all of the cache one recording, or silent?")


def _labels(cache: FeatureCache, f: int) -> frozenset | None:
    return cache.file_labels[f] or None


class TripletSampler:
    """Base class: ``sample(cache, rng) -> Triplet``."""

    name = "base"
    minable = True

    def sample(self, cache: FeatureCache, rng: np.random.Generator) -> Triplet:
        raise NotImplementedError

    def _unsupervised_negative(self, cache, rng, a_rec):
        f, rec, start = random_other(cache, rng, a_rec)
        return cache.window(rec, start), rec, _labels(cache, f)


@dataclass
class GaussianNoise(TripletSampler):
    """Section 3.2, "Gaussian noise": ``x_p = x_a * (1 + |eps|)``, ``eps ~ N(0, sigma^2)``
    elementwise, so the positive is the anchor with random non-negative gains per cell.
    The negative is a random window of another recording."""

    sigma: float = 0.5
    name = "gaussian_noise"

    def sample(self, cache, rng):
        f, rec, start = random_anchor(cache, rng)
        a = cache.window(rec, start)
        eps = rng.normal(0.0, self.sigma, size=a.shape).astype(np.float32)
        p = a * (1.0 + np.abs(eps))
        n, n_rec, n_labels = self._unsupervised_negative(cache, rng, rec)
        lab = _labels(cache, f)
        return Triplet(a, p, n, self.name, True, frozenset([rec]), frozenset([rec]), frozenset([n_rec]),
                       lab, lab, n_labels)


def translate(x: np.ndarray, time_shift: int, freq_shift: int) -> np.ndarray:
    """Circular shift by ``time_shift`` frames, then a truncated shift by ``freq_shift`` bands.

    A positive ``freq_shift`` moves energy up to higher bands; bands shifted past either edge are
    lost and vacated bands get zero energy.
    """
    y = np.roll(x, int(time_shift), axis=0)
    s = int(freq_shift)
    out = np.zeros_like(y)
    n = y.shape[1]
    if abs(s) >= n:
        return out
    if s >= 0:
        out[:, s:] = y[:, :n - s]
    else:
        out[:, :n + s] = y[:, -s:]
    return out


@dataclass
class Translation(TripletSampler):
    """Section 3.2, "time/frequency translation": a circular time shift by an integer uniform in
    ``[0, T-1]``, then a truncated frequency shift by an integer uniform in ``[-S, S]`` (vacated
    bands are zero energy). The negative is a random window of another recording."""

    max_freq_shift: int = 10
    name = "translation"

    def sample(self, cache, rng):
        f, rec, start = random_anchor(cache, rng)
        a = cache.window(rec, start)
        t = int(rng.integers(T))
        s = int(rng.integers(-self.max_freq_shift, self.max_freq_shift + 1))
        p = translate(a, t, s)
        n, n_rec, n_labels = self._unsupervised_negative(cache, rng, rec)
        lab = _labels(cache, f)
        return Triplet(a, p, n, self.name, True, frozenset([rec]), frozenset([rec]), frozenset([n_rec]),
                       lab, lab, n_labels)


def mix(anchor: np.ndarray, negative: np.ndarray, alpha: float) -> np.ndarray:
    """``x_a + alpha * (E(x_a) / E(x_n)) * x_n`` with ``E`` the total energy (float64 sums)."""
    gain = alpha * (float(anchor.sum(dtype=np.float64)) / float(negative.sum(dtype=np.float64)))
    return (anchor.astype(np.float64) + gain * negative.astype(np.float64)).astype(np.float32)


@dataclass
class ExampleMixing(TripletSampler):
    """Section 3.2, "example mixing": ``x_p = x_a + alpha * (E(x_a) / E(x_n)) * x_n`` where
    ``E`` is total energy and ``x_n``, a window of another recording, is also the negative.
    A silent ``x_n`` (``E = 0``) is redrawn. Mining is off: the negative is tied to the positive.
    """

    alpha: float = 0.25
    name = "example_mixing"
    minable = False

    def sample(self, cache, rng):
        f, rec, start = random_anchor(cache, rng)
        a = cache.window(rec, start)
        holder = {}

        def audible(nf, nrec, nstart):
            w = cache.window(nrec, nstart)
            holder["w"] = w
            return float(w.sum(dtype=np.float64)) > 0.0

        nf, n_rec, _ = random_other(cache, rng, rec, accept=audible)
        n = holder["w"]
        p = mix(a, n, self.alpha)
        lab, n_lab = _labels(cache, f), _labels(cache, nf)
        p_lab = (lab | n_lab) if lab is not None and n_lab is not None else None
        return Triplet(a, p, n, self.name, False, frozenset([rec]), frozenset([rec, n_rec]),
                       frozenset([n_rec]), lab, p_lab, n_lab)


@dataclass
class TemporalProximity(TripletSampler):
    """Section 3.2, "temporal proximity": the positive is a window of the anchor's recording
    starting within ``max_offset_frames`` (default 1000 frames = 10 s) of the anchor's start,
    at a different start where the recording allows; the negative is from another recording.
    Anchors are drawn only from recordings longer than one window (when any exist)."""

    max_offset_frames: int = 1000
    name = "temporal_proximity"
    _long: np.ndarray = field(default=None, init=False, repr=False)
    _cache_id: int = field(default=None, init=False, repr=False)

    def _anchor(self, cache, rng):
        # Anchors come from recordings longer than one window: in a recording of one window
        # the positive could only be the anchor itself, a triplet that teaches nothing about
        # proximity (40% of the Debian corpus's files are shorter than 0.96 s).
        if self._cache_id != id(cache):
            self._long = np.flatnonzero(cache.lengths[cache.file_recording] > T)
            self._cache_id = id(cache)
        if len(self._long) == 0:
            return random_anchor(cache, rng)
        f = int(self._long[rng.integers(len(self._long))])
        start = int(rng.integers(_max_start(cache.file_frames[f]) + 1))
        return f, int(cache.file_recording[f]), int(cache.file_start[f]) + start

    def sample(self, cache, rng):
        f, rec, start = self._anchor(cache, rng)
        last = _max_start(cache.lengths[rec])
        lo, hi = max(0, start - self.max_offset_frames), min(last, start + self.max_offset_frames)
        if hi > lo:
            # Draw from the range without the anchor's own start.
            p_start = int(rng.integers(lo, hi))
            if p_start >= start:
                p_start += 1
        else:
            p_start = start
        a, p = cache.window(rec, start), cache.window(rec, p_start)
        n, n_rec, n_labels = self._unsupervised_negative(cache, rng, rec)
        return Triplet(a, p, n, self.name, True, frozenset([rec]), frozenset([rec]), frozenset([n_rec]),
                       None, None, n_labels)


@dataclass
class ExplicitLabel(TripletSampler):
    """Section 3.2's supervised baseline: anchor and positive share a label, the negative shares
    none with the anchor. Labels are sets (multi-label). The anchor is a labelled file chosen
    uniformly, then one of its labels; the positive is another file with that label (the same
    file, another window, when no other file has it); the negative is a labelled file whose
    labels are disjoint from the anchor's. Windows are cut within files."""

    name = "explicit_label"
    _by_label: dict = field(default=None, init=False, repr=False)
    _labelled: np.ndarray = field(default=None, init=False, repr=False)
    _cache_id: int = field(default=None, init=False, repr=False)

    def _index(self, cache):
        if self._cache_id != id(cache):
            by_label: dict[str, list[int]] = {}
            for i, labs in enumerate(cache.file_labels):
                for lab in labs:
                    by_label.setdefault(lab, []).append(i)
            if not by_label:
                raise ValueError("explicit-label sampling needs a cache with labels")
            self._by_label = {k: np.array(v) for k, v in sorted(by_label.items())}
            self._labelled = np.array([i for i, labs in enumerate(cache.file_labels) if labs])
            self._cache_id = id(cache)

    def _window(self, cache, rng, f):
        return cache.file_window(f, int(rng.integers(_max_start(cache.file_frames[f]) + 1)))

    def sample(self, cache, rng):
        self._index(cache)
        fa = int(self._labelled[rng.integers(len(self._labelled))])
        a_labels = cache.file_labels[fa]
        lab = sorted(a_labels)[int(rng.integers(len(a_labels)))]
        same = self._by_label[lab]
        others = same[same != fa]
        fp = int(others[rng.integers(len(others))]) if len(others) else fa
        for _ in range(_MAX_TRIES):
            fn = int(self._labelled[rng.integers(len(self._labelled))])
            if not (cache.file_labels[fn] & a_labels):
                break
        else:
            raise ValueError(f"no file shares no label with {cache.file_keys[fa]!r}")
        rec = lambda f: frozenset([int(cache.file_recording[f])])  # noqa: E731
        return Triplet(self._window(cache, rng, fa), self._window(cache, rng, fp),
                       self._window(cache, rng, fn), self.name, True, rec(fa), rec(fp), rec(fn),
                       a_labels, cache.file_labels[fp], cache.file_labels[fn])


SAMPLERS = {cls.name: cls for cls in (GaussianNoise, Translation, ExampleMixing, TemporalProximity,
                                       ExplicitLabel)}
# The paper's unsupervised "joint" training: the four label-free samplers, equally weighted.
DEFAULT_JOINT = ("gaussian_noise", "translation", "example_mixing", "temporal_proximity")


@dataclass
class Joint(TripletSampler):
    """Section 3.2/4.4 "joint training": each triplet comes from one of ``samplers``, drawn
    with probabilities proportional to ``weights`` (equal by default)."""

    samplers: Sequence[TripletSampler] = ()
    weights: Sequence[float] | None = None
    name = "joint"

    def __post_init__(self):
        if not self.samplers:
            raise ValueError("Joint needs at least one sampler")
        w = np.ones(len(self.samplers)) if self.weights is None else np.asarray(self.weights, float)
        if len(w) != len(self.samplers) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"bad sampler weights {self.weights!r}")
        self._p = w / w.sum()

    def sample(self, cache, rng):
        k = int(rng.choice(len(self.samplers), p=self._p))
        return self.samplers[k].sample(cache, rng)


def make_sampler(spec: dict[str, dict]) -> Joint:
    """A :class:`Joint` from ``{name: {"weight": w, **hyperparameters}}`` (samplers with weight 0
    are left out)."""
    samplers, weights = [], []
    for name, params in spec.items():
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
        params = dict(params)
        w = float(params.pop("weight", 1.0))
        if w == 0:
            continue
        samplers.append(SAMPLERS[name](**params))
        weights.append(w)
    return Joint(samplers, weights)


@dataclass
class Batch:
    """A step's triplets as arrays. ``energies``: float32 ``(3, B, T, N_MELS)`` (anchors,
    positives, negatives); ``candidates``: bool ``(B, 3B)``, see :func:`negative_candidates`;
    ``recordings``: int64 ``(3B, REC_SLOTS)``, the recordings each window holds (-1: unused);
    ``pool_ok``: bool ``(B,)``, whether a triplet may take negatives from outside its batch
    (``training.negatives``)."""

    energies: np.ndarray
    samplers: list[str]
    minable: np.ndarray
    candidates: np.ndarray
    recordings: np.ndarray | None = None
    pool_ok: np.ndarray | None = None


def negative_candidates(triplets: Sequence[Triplet]) -> np.ndarray:
    """Which batch windows may serve as triplet ``i``'s negative when mining (section 4.2).

    Columns index the concatenation ``[anchors, positives, negatives]`` (``3B``). Triplet ``i``
    may use its own negative and the positives and negatives of other triplets, except:

    - any window containing audio of ``i``'s anchor recording (a proximity neighbour or a noisy
      copy of the anchor is a positive, not a negative);
    - for explicit-label triplets, any window whose labels are unknown or overlap the anchor's.

    A triplet that is not minable (example mixing) has only its own negative.
    """
    b = len(triplets)
    mask = np.zeros((b, 3 * b), dtype=bool)
    windows = [(t.positive_recordings, t.positive_labels) for t in triplets] + \
              [(t.negative_recordings, t.negative_labels) for t in triplets]
    for i, t in enumerate(triplets):
        mask[i, 2 * b + i] = True
        if not t.minable:
            continue
        labelled = t.sampler == ExplicitLabel.name
        for j, (recs, labs) in enumerate(windows):
            col = b + j
            if j % b == i:
                continue  # own positive, and own negative already set
            if t.anchor_recordings & recs:
                continue
            if labelled and (labs is None or (labs & t.anchor_labels)):
                continue
            mask[i, col] = True
    return mask


def window_recordings(triplets: Sequence[Triplet]) -> np.ndarray:
    """``(3B, REC_SLOTS)`` recording ids of ``[anchors, positives, negatives]``, -1 padded."""
    from training.negatives import REC_SLOTS

    b = len(triplets)
    out = np.full((3 * b, REC_SLOTS), -1, dtype=np.int64)
    for k, field_name in enumerate(("anchor_recordings", "positive_recordings", "negative_recordings")):
        for i, t in enumerate(triplets):
            recs = sorted(getattr(t, field_name))
            if len(recs) > REC_SLOTS:
                raise ValueError(f"a window holds {len(recs)} recordings; at most {REC_SLOTS} are tracked")
            out[k * b + i, :len(recs)] = recs
    return out


def sample_batch(sampler: TripletSampler, cache: FeatureCache, batch_size: int, seed: int,
                 rank: int, step: int, augment=None) -> Batch:
    """Step ``step``'s batch on ``rank``: ``batch_size`` triplets from ``batch_rng``, each
    positive then augmented by ``augment`` (a ``training.augment.Augment``) when it is enabled."""
    rng = batch_rng(seed, rank, step)
    triplets = [sampler.sample(cache, rng) for _ in range(batch_size)]
    if augment is not None and augment.enabled:
        triplets = [augment.apply(t, cache, rng) for t in triplets]
    energies = np.empty((3, batch_size, T, frontend.N_MELS), dtype=np.float32)
    for i, t in enumerate(triplets):
        energies[0, i], energies[1, i], energies[2, i] = t.anchor, t.positive, t.negative
    pool_ok = np.array([t.minable and t.sampler != ExplicitLabel.name for t in triplets])
    return Batch(energies, [t.sampler for t in triplets], np.array([t.minable for t in triplets]),
                 negative_candidates(triplets), window_recordings(triplets), pool_ok)
