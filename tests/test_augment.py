"""The augmentation of positives (crop, background, noise; the recording conditions: eq, gain,
masking): off by default, shape and range kept, each step does what its docstring says, and a
step left at probability 0 draws nothing from the generator."""
from __future__ import annotations

import numpy as np
import pytest

from training.augment import Augment, band_gains_db, mask_runs, resize_crop
from training.config import load_config
from training.feature_cache import FeatureCache
from training.samplers import make_sampler, sample_batch

from test_trainer import synth_cache, tiny_config

RECORDING = dict(enabled=True, crop_prob=0.0, background_prob=0.0, noise_prob=0.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return synth_cache(tmp_path_factory.mktemp("data"))


def window(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((96, 64)).astype(np.float32) + 0.1


def test_off_by_default(cache, tmp_path):
    assert not Augment().enabled
    assert (Augment().eq_prob, Augment().gain_prob, Augment().mask_prob) == (0.0, 0.0, 0.0)
    config = load_config(tiny_config(cache, tmp_path), [])
    assert config.augment["enabled"] is False


def test_band_gains_are_smooth_and_bounded():
    for seed in range(50):
        g = band_gains_db(np.random.default_rng(seed), 64, tilt_db=10.0, eq_db=6.0)
        assert g.shape == (64,) and np.abs(g).max() <= 5.0 + 6.0 + 1e-9
        assert np.abs(np.diff(g)).max() < 1.5  # no band jumps: a curve, not noise
    assert np.abs(band_gains_db(np.random.default_rng(0), 64, 0.0, 0.0)).max() == 0.0


def test_eq_and_gain_scale_bands_and_the_window():
    x = window()
    eq = Augment(**RECORDING, eq_prob=1.0)
    y, bg = eq.positive(x, None, np.random.default_rng(3), anchor_rec=0)
    ratio = y / x
    assert bg is None and y.shape == x.shape and y.dtype == np.float32
    # One factor per band, the same in every frame, within the curve's dB range.
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape), rtol=1e-5)
    assert not np.allclose(ratio[0], 1.0)
    assert np.abs(10 * np.log10(ratio[0])).max() <= 11.0 + 1e-4
    gain = Augment(**RECORDING, gain_prob=1.0, gain_db=12.0)
    for seed in range(20):
        y, _ = gain.positive(x, None, np.random.default_rng(seed), anchor_rec=0)
        r = y / x
        np.testing.assert_allclose(r, r.flat[0], rtol=1e-5)
        assert abs(10 * np.log10(r.flat[0])) <= 12.0 + 1e-4


def test_masks_zero_one_run_of_frames_and_one_of_bands():
    x = window()
    y = mask_runs(x, np.random.default_rng(0), max_frames=16, max_bands=8)
    zero_frames = np.flatnonzero((y == 0).all(axis=1))
    zero_bands = np.flatnonzero((y == 0).all(axis=0))
    assert len(zero_frames) <= 16 and len(zero_bands) <= 8
    for idx in (zero_frames, zero_bands):
        assert len(idx) == 0 or (np.diff(idx) == 1).all()  # contiguous runs
    keep = np.ones_like(x, dtype=bool)
    keep[zero_frames, :] = False
    keep[:, zero_bands] = False
    np.testing.assert_array_equal(y[keep], x[keep])
    sizes = [(mask_runs(x, np.random.default_rng(s), 16, 8) == 0).sum() for s in range(30)]
    assert max(sizes) > 0


def test_steps_at_probability_zero_draw_nothing():
    x = window()
    for aug in (Augment(enabled=True), Augment(**RECORDING)):
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        aug._recording_conditions(x, a)
        assert a.random() == b.random()


def test_recording_conditions_in_a_batch(cache):
    fc = FeatureCache(cache)
    sampler = make_sampler({"translation": {}})
    aug = Augment(**RECORDING, eq_prob=1.0, gain_prob=1.0, mask_prob=1.0)
    plain = sample_batch(sampler, fc, 8, seed=1, rank=0, step=0)
    hard = sample_batch(sampler, fc, 8, seed=1, rank=0, step=0, augment=aug)
    assert hard.energies.shape == plain.energies.shape and hard.energies.dtype == np.float32
    assert np.isfinite(hard.energies).all() and (hard.energies >= 0).all()
    np.testing.assert_array_equal(hard.energies[0], plain.energies[0])  # anchors untouched
    assert not np.array_equal(hard.energies[1], plain.energies[1])  # positives changed
    again = sample_batch(sampler, fc, 8, seed=1, rank=0, step=0, augment=aug)
    np.testing.assert_array_equal(again.energies, hard.energies)


def test_negative_sizes_are_refused():
    with pytest.raises(ValueError, match="gain_db"):
        Augment(gain_db=-1.0)
    with pytest.raises(ValueError, match="mask_prob"):
        Augment.from_dict({"mask_prob": 1.5})


def test_augmentation_keeps_shape_and_range_and_tracks_the_background(cache):
    fc = FeatureCache(cache)
    aug = Augment(enabled=True, crop_prob=1.0, background_prob=1.0, noise_prob=1.0)
    sampler = make_sampler({"translation": {}})
    plain = sample_batch(sampler, fc, 8, seed=1, rank=0, step=0)
    hard = sample_batch(sampler, fc, 8, seed=1, rank=0, step=0, augment=aug)
    assert hard.energies.shape == plain.energies.shape and hard.energies.dtype == np.float32
    assert np.isfinite(hard.energies).all() and (hard.energies >= 0).all()
    # Anchors and negatives are untouched; positives changed, and now hold two recordings.
    np.testing.assert_array_equal(hard.energies[0], plain.energies[0])
    assert not np.array_equal(hard.energies[1], plain.energies[1])
    b = 8
    assert ((hard.recordings[b:2 * b] >= 0).sum(1) == 2).all()
    # The same (seed, rank, step) gives the same batch.
    again = sample_batch(sampler, fc, 8, seed=1, rank=0, step=0, augment=aug)
    np.testing.assert_array_equal(again.energies, hard.energies)
    # A crop at scale 1 is the identity; a real crop stays within the input's range.
    x = np.random.default_rng(0).random((96, 64)).astype(np.float32)
    np.testing.assert_array_equal(resize_crop(x, np.random.default_rng(0), 1.0), x)
    y = resize_crop(x, np.random.default_rng(1), 0.5)
    assert y.shape == x.shape and x.min() <= y.min() and y.max() <= x.max()
