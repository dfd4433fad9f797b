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

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from audioembed import frontend
from audioembed.errors import AudioembedError
from training.feature_cache import FeatureCache
from training.negatives import REC_SLOTS

T = frontend.WINDOW_FRAMES
_MAX_TRIES = 1000


class Window(NamedTuple):
    """One window of a triplet: its energies, the recordings whose audio it contains (two for
    a mixture) and the labels of its files (``None``: unknown)."""

    energies: np.ndarray
    recordings: frozenset
    labels: frozenset | None = None


class Triplet(NamedTuple):
    """One training triplet: energy windows plus what the batch miner needs to know.

    ``*_recordings`` are the recordings whose audio a window contains (two for a mixture);
    ``*_labels`` the labels of its files (``None``: unknown). Build one with :meth:`of`.
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

    @classmethod
    def of(cls, sampler: str, minable: bool, anchor: Window, positive: Window,
           negative: Window) -> "Triplet":
        return cls(anchor.energies, positive.energies, negative.energies, sampler, minable,
                   anchor.recordings, positive.recordings, negative.recordings,
                   anchor.labels, positive.labels, negative.labels)


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


class SamplerError(AudioembedError, ValueError):
    """A feature cache the configured samplers cannot draw triplets from."""


def random_other(cache: FeatureCache, rng: np.random.Generator, exclude_rec: int,
                 accept=None) -> tuple[int, int, int]:
    """A random window (as :func:`random_anchor`) from a recording other than ``exclude_rec``."""
    if cache.num_recordings < 2:
        raise SamplerError("triplet sampling needs at least two recordings in the cache")
    for _ in range(_MAX_TRIES):
        f, rec, start = random_anchor(cache, rng)
        if rec != exclude_rec and (accept is None or accept(f, rec, start)):
            return f, rec, start
    raise SamplerError(f"found no acceptable negative in {_MAX_TRIES} draws; "
                       "is nearly all of the cache one recording, or silent?")


def _labels(cache: FeatureCache, f: int) -> frozenset | None:
    return cache.file_labels[f] or None


class TripletSampler:
    """Base class: ``sample(cache, rng) -> Triplet``."""

    name = "base"
    minable = True

    def sample(self, cache: FeatureCache, rng: np.random.Generator) -> Triplet:
        raise NotImplementedError

    def _with_random_negative(self, cache, rng, anchor: Window, positive: Window) -> Triplet:
        """The label-free samplers' triplet: ``anchor`` and ``positive`` (both of the anchor's
        recording), with a random window of another recording as the negative."""
        f, rec, start = random_other(cache, rng, min(anchor.recordings))
        negative = Window(cache.window(rec, start), frozenset([rec]), _labels(cache, f))
        return Triplet.of(self.name, self.minable, anchor, positive, negative)


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
        recs, lab = frozenset([rec]), _labels(cache, f)
        return self._with_random_negative(cache, rng, Window(a, recs, lab), Window(p, recs, lab))


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
        recs, lab = frozenset([rec]), _labels(cache, f)
        return self._with_random_negative(cache, rng, Window(a, recs, lab), Window(p, recs, lab))


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
        return Triplet.of(self.name, self.minable, Window(a, frozenset([rec]), lab),
                          Window(p, frozenset([rec, n_rec]), p_lab), Window(n, frozenset([n_rec]), n_lab))


@dataclass
class TemporalProximity(TripletSampler):
    """Section 3.2, "temporal proximity": the positive is a window of the anchor's recording
    starting within ``max_offset_frames`` (default 1000 frames = 10 s) of the anchor's start,
    at a different start where the recording allows; the negative is from another recording.
    Anchors are drawn only from recordings longer than one window (when any exist)."""

    max_offset_frames: int = 1000
    name = "temporal_proximity"

    def anchor(self, cache, rng) -> tuple[int, int, int]:
        """``(file, recording, start frame in the recording)`` of a random anchor."""
        # Anchors come from recordings longer than one window: in a recording of one window
        # the positive could only be the anchor itself, a triplet that teaches nothing about
        # proximity (many short sound-effect files are).
        long_files = cache.long_recording_files
        if len(long_files) == 0:
            return random_anchor(cache, rng)
        f = int(long_files[rng.integers(len(long_files))])
        start = int(rng.integers(_max_start(cache.file_frames[f]) + 1))
        return f, int(cache.file_recording[f]), int(cache.file_start[f]) + start

    def positive_start(self, cache, rng, rec: int, start: int) -> int:
        """The positive's start frame in recording ``rec`` for an anchor starting at ``start``."""
        last = _max_start(cache.lengths[rec])
        lo, hi = max(0, start - self.max_offset_frames), min(last, start + self.max_offset_frames)
        if hi <= lo:
            return start
        # Draw from the range without the anchor's own start.
        p_start = int(rng.integers(lo, hi))
        return p_start + 1 if p_start >= start else p_start

    def sample(self, cache, rng):
        f, rec, start = self.anchor(cache, rng)
        p_start = self.positive_start(cache, rng, rec, start)
        recs = frozenset([rec])
        return self._with_random_negative(cache, rng, Window(cache.window(rec, start), recs),
                                          Window(cache.window(rec, p_start), recs))


@dataclass
class ExplicitLabel(TripletSampler):
    """Section 3.2's supervised baseline: anchor and positive share a label, the negative shares
    none with the anchor. Labels are sets (multi-label). The anchor is a labelled file chosen
    uniformly, then one of its labels; the positive is another file with that label (the same
    file, another window, when no other file has it); the negative is a labelled file whose
    labels are disjoint from the anchor's. Windows are cut within files."""

    name = "explicit_label"

    def _window(self, cache, rng, f) -> Window:
        start = int(rng.integers(_max_start(cache.file_frames[f]) + 1))
        return Window(cache.file_window(f, start), frozenset([int(cache.file_recording[f])]),
                      cache.file_labels[f])

    def sample(self, cache, rng):
        by_label, labelled = cache.files_by_label, cache.labelled_files
        if not by_label:
            raise SamplerError("explicit-label sampling needs a cache with labels")
        fa = int(labelled[rng.integers(len(labelled))])
        a_labels = cache.file_labels[fa]
        lab = sorted(a_labels)[int(rng.integers(len(a_labels)))]
        same = by_label[lab]
        others = same[same != fa]
        fp = int(others[rng.integers(len(others))]) if len(others) else fa
        for _ in range(_MAX_TRIES):
            fn = int(labelled[rng.integers(len(labelled))])
            if not (cache.file_labels[fn] & a_labels):
                break
        else:
            raise SamplerError(f"no file shares no label with {cache.file_keys[fa]!r}")
        return Triplet.of(self.name, self.minable, self._window(cache, rng, fa),
                          self._window(cache, rng, fp), self._window(cache, rng, fn))


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
