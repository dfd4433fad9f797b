"""Each section 3.2 sampler's defining property, on a cache whose frames say where they are from.

Band 0 of every frame holds ``frame index + 1`` and band 1 ``file index + 1`` (integers below
2048 are exact in fp16), so a window reveals its file and start frame.
"""
from __future__ import annotations

import numpy as np
import pytest

from audioembed import frontend
from training.feature_cache import CacheWriter, FeatureCache
from training.samplers import (SAMPLERS, ExampleMixing, ExplicitLabel, GaussianNoise, Joint,
                               TemporalProximity, Translation, Triplet, Window, batch_rng, make_sampler,
                               mix, negative_candidates, sample_batch, translate)

T, F = frontend.WINDOW_FRAMES, frontend.N_MELS
LENGTHS = [1500, 400, 90, 700, 1200, 300]
LABELS = [("dog",), ("dog", "bark"), ("cat",), ("cat", "meow"), ("car",), ()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    with CacheWriter(out, block_frames=1000) as w:
        for i, n in enumerate(LENGTHS):
            e = rng.uniform(0.5, 4.0, size=(n, F)).astype(np.float32)
            e[:, 0] = np.arange(1, n + 1)
            e[:, 1] = i + 1
            w.add(f"file{i}", e, recording=f"rec{i}", labels=LABELS[i], order=i)
    return FeatureCache(out)


def where(window):
    """(file, start frame) of a window cut from the fixture cache."""
    return int(window[0, 1]) - 1, int(window[0, 0]) - 1


def test_example_mixing_is_the_formula(cache):
    s = ExampleMixing(alpha=0.25)
    rng = np.random.default_rng(1)
    for _ in range(50):
        t = s.sample(cache, rng)
        ea, en = t.anchor.sum(dtype=np.float64), t.negative.sum(dtype=np.float64)
        expected = (t.anchor.astype(np.float64) + 0.25 * (ea / en) * t.negative.astype(np.float64))
        np.testing.assert_array_equal(t.positive, expected.astype(np.float32))
        assert where(t.negative)[0] != where(t.anchor)[0] and not t.minable
    a, n = np.ones((T, F), np.float32), np.full((T, F), 4.0, np.float32)
    np.testing.assert_allclose(mix(a, n, 0.5), 1 + 0.5 * 0.25 * 4)  # E(a)/E(n) = 1/4


def test_example_mixing_redraws_silent_negatives(tmp_path):
    with CacheWriter(tmp_path) as w:
        w.add("loud", np.ones((200, F), np.float32))
        w.add("silent", np.zeros((200, F), np.float32))
        w.add("quiet", np.full((200, F), 0.1, np.float32))
    c = FeatureCache(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(30):
        t = ExampleMixing().sample(c, rng)
        assert t.negative.sum() > 0 and np.isfinite(t.positive).all()


@pytest.mark.parametrize("shift", range(-12, 13))
def test_translate_keeps_energy_except_truncated_bands(shift):
    x = np.random.default_rng(shift + 20).uniform(size=(T, F))
    t = (shift * 7) % T
    y = translate(x, t, shift)
    # The circular time shift keeps every band's energy; the frequency shift loses exactly
    # the |shift| bands pushed past the edge: the top ones going up, the bottom ones going down.
    lost = x[:, F - shift:].sum() if shift > 0 else x[:, :-shift].sum() if shift < 0 else 0.0
    assert y.sum() == pytest.approx(x.sum() - lost, rel=1e-12)
    kept = slice(max(shift, 0), F + min(shift, 0))
    np.testing.assert_array_equal(y[:, kept], np.roll(x, t, axis=0)[:, max(-shift, 0):F - max(shift, 0)])
    vacated = np.ones(F, bool)
    vacated[kept] = False
    assert not y[:, vacated].any()


def test_translation_sampler_draws_shifts_in_range(cache):
    s = Translation(max_freq_shift=3)
    rng = np.random.default_rng(2)
    seen_t, seen_s = set(), set()
    for _ in range(40):
        trip = s.sample(cache, rng)
        matches = [(t, f) for t in range(T) for f in range(-3, 4)
                   if np.array_equal(translate(trip.anchor, t, f), trip.positive)]
        assert matches, "positive is not a translation of the anchor within the ranges"
        seen_t.update(m[0] for m in matches)
        seen_s.update(m[1] for m in matches)
        assert where(trip.negative)[0] != where(trip.anchor)[0]
    assert len(seen_s) >= 5 and len(seen_t) >= 20


def test_gaussian_noise_gains_follow_the_half_normal_law(cache):
    sigma = 0.5
    s = GaussianNoise(sigma=sigma)
    rng = np.random.default_rng(3)
    gains = []
    for _ in range(40):
        t = s.sample(cache, rng)
        assert (t.positive >= t.anchor).all()
        nz = t.anchor > 0
        gains.append((t.positive[nz] / t.anchor[nz] - 1.0))
        assert where(t.negative)[0] != where(t.anchor)[0]
    g = np.concatenate(gains)
    assert g.min() >= 0
    # |eps| with eps ~ N(0, sigma^2): mean sigma*sqrt(2/pi), median 0.6745*sigma.
    assert g.mean() == pytest.approx(sigma * np.sqrt(2 / np.pi), rel=0.02)
    assert np.median(g) == pytest.approx(0.6745 * sigma, rel=0.03)


def test_temporal_proximity_positive_is_near_in_the_same_recording(cache):
    dt = 300
    s = TemporalProximity(max_offset_frames=dt)
    rng = np.random.default_rng(4)
    offsets = []
    for _ in range(300):
        t = s.sample(cache, rng)
        fa, sa = where(t.anchor)
        fp, sp = where(t.positive)
        fn, _ = where(t.negative)
        assert fa == fp and fn != fa
        assert abs(sp - sa) <= dt
        assert LENGTHS[fa] > T, "anchors come from recordings longer than one window"
        assert sp != sa
        offsets.append(sp - sa)
    assert max(offsets) > dt * 0.8 and min(offsets) < -dt * 0.8


def test_explicit_label_shares_and_avoids_labels(cache):
    s = ExplicitLabel()
    rng = np.random.default_rng(5)
    for _ in range(100):
        t = s.sample(cache, rng)
        fa, fp, fn = where(t.anchor)[0], where(t.positive)[0], where(t.negative)[0]
        la, lp, ln = set(LABELS[fa]), set(LABELS[fp]), set(LABELS[fn])
        assert la and la & lp and not la & ln and ln
        if fp == fa:  # only when the drawn label is on no other file
            assert any(sum(lab in other for other in LABELS) == 1 for lab in la)


def test_joint_weights_and_pure_function_of_seed_rank_step(cache):
    s = make_sampler({"gaussian_noise": {"weight": 3.0}, "translation": {"max_freq_shift": 4},
                      "example_mixing": {"weight": 0}})
    assert [x.name for x in s.samplers] == ["gaussian_noise", "translation"]
    rng = np.random.default_rng(6)
    names = [s.sample(cache, rng).sampler for _ in range(400)]
    assert names.count("gaussian_noise") / 400 == pytest.approx(0.75, abs=0.07)
    a = sample_batch(s, cache, 8, seed=1, rank=0, step=5)
    b = sample_batch(s, cache, 8, seed=1, rank=0, step=5)
    c = sample_batch(s, cache, 8, seed=1, rank=1, step=5)
    np.testing.assert_array_equal(a.energies, b.energies)
    assert a.samplers == b.samplers and not np.array_equal(a.energies, c.energies)
    assert a.energies.shape == (3, 8, T, F)
    assert batch_rng(1, 0, 5).integers(1 << 30) == batch_rng(1, 0, 5).integers(1 << 30)
    with pytest.raises(ValueError):
        Joint([GaussianNoise()], weights=[-1.0])


def test_negative_candidates_exclude_the_anchor_recording_and_shared_labels(cache):
    rng = np.random.default_rng(7)
    triplets = [TemporalProximity().sample(cache, rng) for _ in range(3)]
    triplets += [ExampleMixing().sample(cache, rng), ExplicitLabel().sample(cache, rng)]
    b = len(triplets)
    mask = negative_candidates(triplets)
    assert mask.shape == (b, 3 * b) and not mask[:, :b].any()  # anchors are never candidates
    for i, t in enumerate(triplets):
        assert mask[i, 2 * b + i] and not mask[i, b + i]
        cols = np.flatnonzero(mask[i])
        if not t.minable:
            assert list(cols) == [2 * b + i]
            continue
        for col in cols:
            other = triplets[col % b]
            recs = other.positive_recordings if col < 2 * b else other.negative_recordings
            assert not (recs & t.anchor_recordings)
            if t.sampler == "explicit_label":
                labs = other.positive_labels if col < 2 * b else other.negative_labels
                assert labs is not None and not (labs & t.anchor_labels)


def _hand_triplet(sampler, minable, a_rec, p_rec, n_rec, a_lab=None, p_lab=None, n_lab=None):
    w = np.zeros((T, F), np.float32)
    lab = lambda x: None if x is None else frozenset(x)  # noqa: E731
    return Triplet(w, w, w, sampler, minable, frozenset(a_rec), frozenset(p_rec), frozenset(n_rec),
                   lab(a_lab), lab(p_lab), lab(n_lab))


def test_negative_candidates_of_a_hand_built_batch():
    triplets = [
        _hand_triplet("temporal_proximity", True, {0}, {0}, {1}),
        _hand_triplet("gaussian_noise", True, {1}, {1}, {2}, {"cat"}, {"cat"}, {"dog", "bark"}),
        _hand_triplet("example_mixing", False, {2}, {2, 0}, {0}),
        _hand_triplet("explicit_label", True, {3}, {4}, {5}, {"dog"}, {"dog"}, {"cat"}),
    ]
    # Columns: anchors 0-3, positives 4-7, negatives 8-11.
    #   row 0: not P2 (holds recording 0) nor N2 (recording 0); labels do not matter.
    #   row 1: not N0 (recording 1).
    #   row 2: mixing, own negative only.
    #   row 3: explicit label: only windows with known labels disjoint from {dog}: P1 {cat}
    #          (N1 {dog, bark} shares "dog"; the rest are unlabelled).
    expected = np.array([[0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1],
                         [0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1],
                         [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
                         [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(negative_candidates(triplets), expected)


@pytest.mark.parametrize("name, key", [("temporal_proximity", "_long"), ("explicit_label", "_by_label"),
                                       ("translation", "name"), ("example_mixing", "minable")])
def test_config_allows_only_sampler_hyperparameters(name, key):
    from training.config import ConfigError, from_dict, sampler_parameters

    with pytest.raises(ConfigError, match="unknown keys"):
        from_dict({"data": {"cache": "c"}, "samplers": {name: {key: 1}}})
    assert sampler_parameters(SAMPLERS["temporal_proximity"]) == {"max_offset_frames"}
    assert sampler_parameters(SAMPLERS["explicit_label"]) == set()


def test_triplet_of_three_windows():
    w = np.zeros((T, F), np.float32)
    t = Triplet.of("x", True, Window(w, frozenset([1]), frozenset(["a"])), Window(w, frozenset([1, 2])),
                   Window(w, frozenset([3]), frozenset()))
    assert t.anchor_recordings == {1} and t.positive_recordings == {1, 2} and t.negative_recordings == {3}
    assert t.anchor_labels == {"a"} and t.positive_labels is None and t.negative_labels == frozenset()
