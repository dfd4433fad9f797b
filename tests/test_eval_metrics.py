"""Evaluation metrics on synthetic embeddings with known answers."""
import math

import numpy as np
import pytest
import torch

import audioembed.mlp
from training.evaluation import classifiers as clf
from training.evaluation.metrics import classifier_scores, pair_ap, qbe_map, segment_means, unit_rows
from training.evaluation.report import markdown_table, recovery


@pytest.fixture(autouse=True)
def one_thread():
    # These MLPs are tiny: with two OpenMP threads on a busy 2-core machine each step waited on
    # the other thread (55 s instead of 1 s for the 5-fold test).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clusters(n_classes=4, per_class=30, dim=16, spread=0.0, seed=0):
    rng = np.random.default_rng(seed)
    # Every dimension carries class information: after standardisation a pure-noise dimension
    # would weigh as much as a signal one, and a tiny training set could fit the noise.
    centres = 3 * rng.standard_normal((n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    emb = centres[labels] + spread * rng.standard_normal((len(labels), dim))
    return emb.astype(np.float32), np.eye(n_classes, dtype=bool)[labels]


def test_qbe_perfectly_separated_classes_give_map_one():
    emb, y = _clusters(spread=0.1)
    res = qbe_map(emb, y)
    assert res["map"] == pytest.approx(1.0)
    assert res["n_classes"] == 4 and len(res["per_draw"]) == 5


def test_qbe_random_embeddings_are_at_chance():
    rng = np.random.default_rng(1)
    y = np.eye(10, dtype=bool)[rng.integers(0, 10, 1500)]
    res = qbe_map(rng.standard_normal((1500, 64)), y)
    # 100 present and 100 absent: 4950 target pairs against 10000 non-target pairs.
    assert res["chance"] == pytest.approx(4950 / 14950)
    assert abs(res["map"] - res["chance"]) < 0.03


def test_qbe_hand_checked_toy_case():
    # Four unit vectors at angles 0, 30, 100 and 220 degrees. Pairwise angles:
    # (0,1)=30 (1,2)=70 (0,2)=100 (2,3)=120 (0,3)=140 (1,3)=170, which is the ranking by
    # cosine similarity (most similar first). Every class has no more absent than present
    # segments, so each draw takes all of them and the result is deterministic.
    deg = np.radians([0, 30, 100, 220])
    emb = np.stack([np.cos(deg), np.sin(deg)], axis=1)
    y = np.array([[1, 0, 1],   # segment 0: A, C
                  [1, 1, 0],   # segment 1: A, B
                  [1, 1, 0],   # segment 2: A, B
                  [0, 1, 1]],  # segment 3: B, C
                 dtype=bool)
    res = qbe_map(emb, y, ["A", "B", "C"])
    # A: present {0,1,2}, absent {3}. Ranking T(0,1) T(1,2) T(0,2) N N N -> AP 1.
    # B: present {1,2,3}, absent {0}. Ranking N(0,1) T(1,2) N(0,2) T(2,3) N(0,3) T(1,3)
    #    -> AP = (1/2 + 2/4 + 3/6) / 3 = 0.5.
    # C: present {0,3}, absent {1,2}. Ranking N(0,1) N(0,2) N(2,3) T(0,3) N(1,3) -> AP = 1/4.
    assert res["per_class"] == pytest.approx({"A": 1.0, "B": 0.5, "C": 0.25})
    assert res["map"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    # Chance: A 3/6, B 3/6, C 1/5.
    assert res["chance"] == pytest.approx((0.5 + 0.5 + 0.2) / 3)
    assert res["sd"] == pytest.approx(0.0)


def test_pair_ap_ranks_by_cosine_not_euclidean():
    # Segment 1 is far from 0 in Euclidean terms but at the same angle: a perfect target.
    emb = np.array([[1.0, 0.0], [50.0, 0.0], [0.0, 1.0]])
    ap, chance = pair_ap(unit_rows(emb), np.array([0, 1]), np.array([2]))
    assert ap == 1.0 and chance == pytest.approx(1 / 3)


def test_qbe_skips_classes_without_a_target_pair():
    emb, y = _clusters(n_classes=3, per_class=5)
    y = np.concatenate([y, np.eye(3, dtype=bool)[[0]]])  # a lone segment of class 0...
    y = np.concatenate([y, np.zeros((len(y), 1), bool)], axis=1)
    y[-1] = [False, False, False, True]  # ...relabelled as a class of one
    emb = np.concatenate([emb, emb[:1]])
    assert qbe_map(emb, y)["n_classes"] == 3


def test_segment_means_averages_each_segments_windows():
    emb = np.array([[1, 1], [3, 3], [5, 0], [0, 2], [0, 4]], np.float32)
    seg = np.array([0, 0, 1, 2, 2])
    np.testing.assert_allclose(segment_means(emb, seg, 3), [[2, 2], [5, 0], [0, 3]])


def test_classifier_scores_map_and_accuracy():
    y = np.eye(3, dtype=bool)[[0, 1, 2, 2]]
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3]])
    res = classifier_scores(y, scores)
    # Class 2: positives score 0.7 and 0.3, negatives 0.0 and 0.1 -> AP 1. Classes 0, 1: AP 1.
    assert res["map"] == pytest.approx(1.0)
    assert res["accuracy"] == pytest.approx(3 / 4)  # segment 3 is argmax 0


def _window_data(emb, y, windows_per_segment=2, seed=0):
    rng = np.random.default_rng(seed)
    x = np.repeat(emb, windows_per_segment, axis=0)
    x = x + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    seg = np.repeat(np.arange(len(y)), windows_per_segment)
    return clf.WindowData(torch.from_numpy(x.astype(np.float32)), seg, y, np.arange(len(y)))


@pytest.mark.parametrize("layers", [1, 2])
def test_classifier_on_separated_classes_is_near_perfect(layers):
    emb, y = _clusters(n_classes=3, per_class=20, spread=0.3)
    data = _window_data(emb, y)
    splits, kind = clf.outer_folds(y, None, None, seed=0)
    assert len(splits) == 5 and "5-fold" in kind
    cfg = clf.MLPConfig(hidden_layers=layers, hidden_units=32, epochs=30, batch_size=16, patience=5)
    res = clf.cross_validate(data, splits, cfg)
    assert res["map"] > 0.99 and res["accuracy"] > 0.99


def test_training_windows_are_capped_per_segment():
    seg = np.repeat(np.arange(4), [1, 25, 3, 12])
    x = torch.arange(len(seg), dtype=torch.float32)[:, None]
    data = clf.WindowData(x, seg, np.eye(2, dtype=bool)[[0, 1, 0, 1]], np.arange(4))
    xs, ss = data.windows_of(np.array([1, 2, 3]), cap=10, rng=np.random.default_rng(0))
    assert np.bincount(ss, minlength=4).tolist() == [0, 10, 3, 10]
    assert (np.diff(ss) >= 0).all() and len(set(xs[:, 0].tolist())) == 23  # distinct windows
    np.testing.assert_array_equal(seg[xs[:, 0].long().numpy()], ss)
    full, _ = data.windows_of(np.array([1]))
    assert len(full) == 25


def test_fixed_step_budget():
    emb, y = _clusters(n_classes=2, per_class=10)
    data = _window_data(emb, y)
    cfg = clf.MLPConfig(hidden_units=8, steps=7, batch_size=8, val_fraction=0.0)
    _, log = clf.fit_and_score(data, np.arange(0, 20, 2), np.arange(1, 20, 2), cfg)
    assert log["steps"] == 7 and log["epochs_run"] == 3  # 20 windows: 3 steps an epoch


def test_outer_folds_are_group_aware_and_use_official_folds():
    y = np.eye(2, dtype=bool)[np.tile([0, 1], 20)]
    groups = [f"g{i // 4}" for i in range(40)]
    splits, _ = clf.outer_folds(y, None, groups, seed=3)
    g = np.asarray(groups)
    for train, test in splits:
        assert not set(g[train]) & set(g[test])
    folds = [str(1 + i % 4) for i in range(40)]
    splits, kind = clf.outer_folds(y, folds, groups, seed=0)
    assert kind == "official folds" and len(splits) == 4
    assert all(set(np.asarray(folds)[test]) == {str(k)} for k, (_, test) in enumerate(splits, 1))


def test_light_split_takes_up_to_20_per_class_from_the_pool():
    y = np.eye(3, dtype=bool)[np.repeat([0, 1, 2], [50, 30, 9])]
    pool = np.arange(0, len(y), 2)  # every other segment: 25, 15 and 4 (or 5) per class
    train = clf.light_split(y, pool, 20, np.random.default_rng(0))
    assert set(train) <= set(pool)
    assert y[train].sum(axis=0).tolist() == [20, 15, y[pool, 2].sum()]


def test_light_supervision_on_separated_classes_tests_on_the_outer_folds():
    emb, y = _clusters(n_classes=3, per_class=30, spread=0.3)
    data = _window_data(emb, y)
    splits, _ = clf.outer_folds(y, None, None, seed=0)
    cfg = clf.MLPConfig(hidden_units=32, epochs=20, batch_size=8, val_fraction=0.0)
    res = clf.light_supervision(data, splits, cfg, per_class=5, trials=3)
    assert res["map"] > 0.99 and res["accuracy"] > 0.99 and len(res["trials"]) == 3
    for t, trial in enumerate(res["trials"]):
        assert trial["n_train"] == 15 and trial["n_test"] == len(splits[t][1])


def test_recovery_and_markdown_table():
    assert recovery(0.5, 0.4, 0.8) == pytest.approx(0.25)
    assert recovery(0.5, 0.4, None) is None and recovery(0.5, 0.4, 0.4) is None

    def result(name, qbe, c1, c2):
        return {"model": {"name": name, "sha256": None if name == "logmel" else "ab" * 32},
                "dataset": {"name": "toy"}, "embedding_dim": 128,
                "qbe": {"map": qbe, "chance": 0.331},
                "classifier": {"1": {"map": c1, "map_sd": 0.01, "accuracy": c1},
                               "2": {"map": c2, "map_sd": 0.02, "accuracy": c2}}}

    base, model, top = result("logmel", 0.4, 0.5, 0.6), result("m", 0.5, 0.7, 0.7), result("t", 0.8, 0.9, 0.8)
    table = markdown_table([base, model], toplines=[top])
    lines = table.strip().splitlines()
    assert len(lines) == 5
    assert "log-mel (baseline)" in lines[2] and "| 0% |" in lines[2]
    assert "| 25% |" in lines[3] and "50% / 50%" in lines[3]  # QbE (.5-.4)/(.8-.4); clf (.7-.5)/(.9-.5)
    assert "(topline)" in lines[4] and "| 100% |" in lines[4]
    no_top = markdown_table([base, model]).strip().splitlines()
    assert no_top[3].split(" | ")[4] == "–"
    assert not math.isnan(recovery(1.0, 0.0, 2.0))


def test_early_stopping_restores_best_epoch(monkeypatch):
    emb, y = _clusters(n_classes=2, per_class=10)
    x, t = torch.from_numpy(emb), torch.from_numpy(y.astype(np.float32))
    # Validation loss falls to its lowest at epoch 3, then rises: patience 3 stops after epoch 6.
    script = iter([0.9, 0.7, 0.5, 0.6, 0.8, 1.0, 1.2, 1.4])
    snapshots = []

    def scripted_loss(model, xv, yv):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(script)

    # The loop lives in audioembed.mlp (shared with `audioembed classify`).
    monkeypatch.setattr(audioembed.mlp, "mean_loss", scripted_loss)
    cfg = clf.MLPConfig(hidden_units=8, epochs=20, batch_size=4, patience=3, lr=1e-2)
    model, log = clf.train_mlp(x, t, cfg, val=(x, t))
    assert log["best_epoch"] == 3 and log["epochs_run"] == 6 and log["val_loss"] == 0.5
    assert len(snapshots) == 6
    got = model.state_dict()
    for k, v in got.items():
        torch.testing.assert_close(v, snapshots[2][k], rtol=0, atol=0, msg=k)
    # The premise: training went on after epoch 3, so keeping the last weights would differ.
    assert not torch.equal(snapshots[2]["1.weight"], snapshots[5]["1.weight"])


def test_validation_segments_come_from_the_training_fold_by_group(monkeypatch):
    n = 40
    y = np.eye(2, dtype=bool)[np.tile([0, 1], n // 2)]
    groups = np.array([f"g{i // 4}" for i in range(n)])
    seg = np.repeat(np.arange(n), 2)
    # Column 0 carries each window's segment, so what the MLP was handed can be traced back.
    x = np.stack([seg, y[seg, 1] + 0.1 * np.random.default_rng(0).standard_normal(len(seg))], 1)
    data = clf.WindowData(torch.from_numpy(x.astype(np.float32)), seg, y, groups)
    seen = []
    real = clf.train_mlp

    def spy(xf, yf, config, val=None):
        seen.append((set(xf[:, 0].long().tolist()), set(val[0][:, 0].long().tolist())))
        return real(xf, yf, config, val)

    monkeypatch.setattr(clf, "train_mlp", spy)
    splits, _ = clf.outer_folds(y, None, list(groups), seed=0)
    cfg = clf.MLPConfig(hidden_units=8, epochs=2, batch_size=16, val_fraction=0.25, max_windows=None)
    res = clf.cross_validate(data, splits, cfg)
    assert len(seen) == len(splits) == 5
    for (train, test), (fit, val), fold in zip(splits, seen, res["folds"]):
        assert fold["stopping"] == "early stopping" and val
        assert fit | val == set(train.tolist()) and not fit & val
        assert not val & set(test.tolist())
        assert not set(groups[list(val)]) & set(groups[test])
        assert not set(groups[list(val)]) & set(groups[list(fit)])


def test_classifier_scores_hand_ranked_multi_label_case_against_scikit_learn():
    from sklearn.metrics import average_precision_score

    # Classes A, B, C, D; C has no positive in this test set and is left out of the mean.
    y = np.array([[1, 1, 0, 0],   # segment 0: A, B
                  [1, 0, 0, 0],   # segment 1: A
                  [0, 1, 0, 1],   # segment 2: B, D
                  [0, 0, 0, 1],   # segment 3: D
                  [0, 0, 0, 0],   # segment 4: none
                  [1, 0, 0, 1]],  # segment 5: A, D
                 dtype=bool)
    scores = np.array([[0.9, 0.5, 0.3, 0.1],
                       [0.4, 0.7, 0.3, 0.2],
                       [0.6, 0.8, 0.3, 0.9],
                       [0.2, 0.1, 0.3, 0.8],
                       [0.1, 0.2, 0.3, 0.3],
                       [0.3, 0.3, 0.3, 0.4]])
    # A: ranking 0+ 2- 1+ 5+ 3- 4-: precisions at the positives 1, 2/3, 3/4.
    # B: ranking 2+ 1- 0+ ...: precisions 1, 2/3.   D: ranking 2+ 3+ 5+ ...: AP 1.
    hand = {0: (1 + 2 / 3 + 3 / 4) / 3, 1: (1 + 2 / 3) / 2, 3: 1.0}
    for c, ap in hand.items():
        assert average_precision_score(y[:, c], scores[:, c]) == pytest.approx(ap)
    res = classifier_scores(y, scores)
    assert res["map"] == pytest.approx(sum(hand.values()) / 3) and res["n_classes"] == 3
    assert "accuracy" not in res  # not single-label
    with pytest.raises(ValueError, match="no class has a positive"):
        classifier_scores(np.zeros((3, 2), bool), scores[:3, :2])


def test_classifier_scores_single_label_case_with_ap_below_one():
    y = np.eye(2, dtype=bool)[[0, 0, 1, 1]]
    scores = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    # Class 0: ranking 0+ 2- 1+ 3-: AP (1 + 2/3) / 2. Class 1: ranking 3+ 1- 2+ 0-: the same.
    res = classifier_scores(y, scores)
    assert res["map"] == pytest.approx((1 + 2 / 3) / 2)
    assert res["accuracy"] == pytest.approx(2 / 4)  # segments 1 and 2 are argmax the other class
