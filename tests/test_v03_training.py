"""The v0.3 training options in the real loop: each objective trains and logs per sampler, the
cosine schedule survives a resume, harder positives keep their shape and range, and a warm start
loads the weights it names."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.augment import Augment, resize_crop
from training.config import ConfigError, load_config
from training.feature_cache import FeatureCache
from training.samplers import make_sampler, sample_batch
from training.schedule import Schedule
from training.checkpoint import load_checkpoint
from training.trainer import LOG_NAME, train

from test_trainer import synth_cache, tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return synth_cache(tmp_path_factory.mktemp("data"))


def _log(run):
    return [json.loads(line) for line in (run / LOG_NAME).read_text().splitlines()]


def _config(cache, tmp_path, *overrides, **train_kw):
    return load_config(tiny_config(cache, tmp_path, **train_kw), list(overrides))


@pytest.mark.parametrize("overrides", [
    ['loss.kind="soft-margin"'],
    ['loss.kind="batch-all"'],
    ["loss.xbm_size=64", "loss.xbm_start_step=1"],
    ['loss.kind="nt-xent"', "loss.projection_dim=16"],
    ["augment.enabled=true"],
    ["augment.enabled=true", "augment.crop_prob=0.0", "augment.background_prob=0.0",
     "augment.noise_prob=0.0", "augment.eq_prob=0.8", "augment.gain_prob=0.8", "augment.mask_prob=0.5"],
], ids=["soft-margin", "batch-all", "xbm", "nt-xent", "augment", "recording-conditions"])
def test_each_objective_trains_and_logs_per_sampler(cache, tmp_path, overrides, one_thread):
    config = _config(cache, tmp_path, *overrides, steps=3)
    result = train(config, tmp_path / "run", echo=lambda s: None)
    assert result.step == 3
    log = _log(tmp_path / "run")
    assert all(np.isfinite(r["loss"]) for r in log)
    for r in log:
        assert set(r["per_sampler"]) <= set(r["samplers"]) and r["per_sampler"]
        for name, s in r["per_sampler"].items():
            assert 0.0 <= s["active"] <= 1.0 and np.isfinite(s["loss"])
    if "loss.xbm_size=64" in overrides:
        # Step 1 has only its own batch; from step 2 on the memory adds the earlier windows.
        assert log[0]["pool_size"] < log[2]["pool_size"]
        ckpt = load_checkpoint(tmp_path / "run/checkpoint.pt")
        assert ckpt["xbm"]["filled"] == 2 * 4 * 2  # steps 1 and 2 entered (start_step 1), 2B each
    if "loss.projection_dim=16" in overrides:
        ckpt = load_checkpoint(tmp_path / "run/checkpoint.pt")
        assert any(k.startswith("head.") for k in ckpt["loss_state"])
        from training.export import export_checkpoint
        from audioembed import load_model

        folder = export_checkpoint(tmp_path / "run/checkpoint.pt", tmp_path / "exported")
        model = load_model(folder)  # the head is not part of the exported network
        assert model.config.embedding_dim == 128 and not hasattr(model, "head")


def test_mining_only_options_are_refused_without_mining(cache, tmp_path):
    with pytest.raises(ConfigError, match="mining"):
        _config(cache, tmp_path, "loss.xbm_size=8", mining=False)
    with pytest.raises(ConfigError, match="nt-xent"):
        _config(cache, tmp_path, 'loss.kind="nt-xent"', "loss.xbm_size=8")


def test_cosine_schedule_values():
    s = Schedule("cosine", warmup_triplets=100, total_triplets=1100, min_lr_ratio=0.1)
    assert s.factor(0) == 0.0 and s.factor(50) == pytest.approx(0.5)
    assert s.factor(100) == pytest.approx(1.0)
    assert s.factor(600) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert s.factor(1100) == pytest.approx(0.1) and s.factor(5000) == pytest.approx(0.1)
    assert Schedule().factor(123) == 1.0
    with pytest.raises(ValueError, match="total_triplets"):
        Schedule("cosine", warmup_triplets=10, total_triplets=5)


def test_schedule_survives_a_resume_and_keeps_its_plan(cache, tmp_path, one_thread):
    plan = ['schedule={kind="cosine", warmup_triplets=8, total_triplets=24, min_lr_ratio=0.0}']
    config = _config(cache, tmp_path, *plan, steps=6, lr=1e-3)
    train(config, tmp_path / "full", echo=lambda s: None)
    train(config, tmp_path / "split", max_triplets=12, echo=lambda s: None)
    # The resumed run is configured with another plan; it keeps the one it started with.
    other = _config(cache, tmp_path, 'schedule={kind="constant"}', steps=6, lr=1e-3)
    with pytest.warns(UserWarning, match="keeps that plan"):
        train(other, tmp_path / "split", resume=True, echo=lambda s: None)
    full, split = _log(tmp_path / "full"), _log(tmp_path / "split")
    lrs = [r["lr"] for r in full]
    assert [r["lr"] for r in split] == lrs
    expected = [1e-3 * Schedule("cosine", 8, 24, 0.0).factor(4 * k) for k in range(6)]
    assert lrs == pytest.approx(expected)
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("full", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["schedule"]["kind"] == "cosine"


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


def test_warm_start_loads_the_named_weights(cache, tmp_path, one_thread):
    first = _config(cache, tmp_path, steps=2)
    train(first, tmp_path / "a", echo=lambda s: None)
    src = load_checkpoint(tmp_path / "a/checkpoint.pt")
    warm = _config(cache, tmp_path, f'train.init="{tmp_path / "a/checkpoint.pt"}"', steps=1, lr=1e-12)
    train(warm, tmp_path / "b", echo=lambda s: None)
    got = load_checkpoint(tmp_path / "b/checkpoint.pt")
    assert got["code"][0]["init"]["spec"].endswith("checkpoint.pt")
    w = "conv1.weight"
    torch.testing.assert_close(got["model"][w], src["model"][w], atol=1e-8, rtol=0)
    bad = _config(cache, tmp_path, 'train.init="triplet-resnet50-joint"', steps=1)
    with pytest.raises(ValueError, match="model config"):
        train(bad, tmp_path / "c", echo=lambda s: None)
