"""``audioembed classify`` and ``audioembed.Classifier``: few-shot classification on synthetic
classes (low tones, high tones, noise bursts) that even the tiny random network separates.

Clips are 1.5 s (two windows), 8 per class: a working classifier is near perfect on held-out
ones; shuffled labels or zeroed weights are near chance (1/3).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed import AudioResNet, Classifier, save_model_folder
from audioembed.classify import CONFIG_NAME, WEIGHTS_NAME, ClassifierError
from conftest import TINY_MODEL_CONFIG
from helpers_cli import cli

SR = 16_000
CLASSES = ("high", "low", "noise")
PER_CLASS = 8  # files 0-4 train, 5-7 test


def _clip(label: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(1.5 * SR)) / SR
    if label == "noise":
        x = np.zeros(t.size)
        start = rng.integers(0, t.size - 4000)
        x[start:start + 4000] = 0.5 * rng.standard_normal(4000)
    else:
        f = (3000.0 if label == "high" else 300.0) * rng.uniform(0.9, 1.1)
        x = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """``root/LABEL/I.wav`` for the three classes."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for i in range(PER_CLASS):
        for label in CLASSES:
            (root / label).mkdir(exist_ok=True)
            sf.write(root / label / f"{i}.wav", _clip(label, rng), SR)
    return root


def _split(root: Path, part: range) -> tuple[list[Path], list[str]]:
    pairs = [(root / label / f"{i}.wav", label) for label in CLASSES for i in part]
    return [p for p, _ in pairs], [label for _, label in pairs]


TRAIN, TEST = range(0, 5), range(5, PER_CLASS)


@pytest.fixture(scope="module")
def fitted(clips, tiny_model_dir) -> Classifier:
    paths, labels = _split(clips, TRAIN)
    return Classifier.fit(paths, labels, model=tiny_model_dir)


def _accuracy(clf: Classifier, root: Path) -> float:
    paths, labels = _split(root, TEST)
    return float(np.mean(np.array(clf.predict(paths)) == np.array(labels)))


def test_a_fitted_classifier_separates_the_classes(fitted, clips):
    assert fitted.labels == list(CLASSES)
    assert _accuracy(fitted, clips) == 1.0
    s = fitted.training
    assert s["stopping"] == "early stopping" and s["n_val_files"] == 3  # one file of each class
    assert s["n_fit_files"] + s["n_val_files"] == 15


def test_shuffled_labels_or_zeroed_weights_are_near_chance(fitted, clips, tiny_model_dir):
    paths, labels = _split(clips, TRAIN)
    shuffled = list(np.random.default_rng(1).permutation(labels))
    assert _accuracy(Classifier.fit(paths, shuffled, model=tiny_model_dir), clips) <= 0.6
    zeroed = Classifier.load(fitted.save(Path(clips).parent / "zeroed"))
    with torch.no_grad():
        for p in zeroed.network.parameters():
            p.zero_()
    # Every score is sigmoid(0): the first label wins, right for one class in three.
    assert _accuracy(zeroed, clips) == pytest.approx(1 / 3)


def test_fit_is_deterministic_given_the_seed(fitted, clips, tiny_model_dir):
    paths, labels = _split(clips, TRAIN)
    again = Classifier.fit(paths, labels, model=tiny_model_dir)
    for k, v in fitted.network.state_dict().items():
        assert torch.equal(v, again.network.state_dict()[k]), k
    other = Classifier.fit(paths, labels, model=tiny_model_dir, seed=1)
    assert not torch.equal(other.network[1].weight, fitted.network[1].weight)


def test_save_load_round_trip_gives_identical_scores(fitted, clips, tmp_path, tiny_model_dir):
    folder = fitted.save(tmp_path / "clf")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no pickle
    meta = json.loads((folder / CONFIG_NAME).read_text())
    assert meta["labels"] == list(CLASSES) and meta["layer"] == "embedding"
    assert meta["model"]["name"] == str(Path(tiny_model_dir).resolve())
    assert len(meta["model"]["sha256"]) == 64 and meta["hidden_layers"] == 1
    assert meta["input_dim"] == 128 and meta["hidden_units"] == 512 and "frontend" in meta
    paths, _ = _split(clips, TEST)
    loaded = Classifier.load(folder)
    np.testing.assert_array_equal(loaded.scores(paths), fitted.scores(paths))
    with pytest.raises(ClassifierError, match="already holds a classifier"):
        fitted.save(folder)


def test_arrays_are_classified_like_their_files(fitted, clips):
    path = clips / "low" / "6.wav"
    audio, sr = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(fitted.scores(audio, sr=sr), fitted.scores(str(path)))
    assert fitted.predict(audio, sr=sr) == "low"


def test_a_linear_classifier_trains_too(clips, tiny_model_dir, tmp_path):
    paths, labels = _split(clips, TRAIN)
    linear = Classifier.fit(paths, labels, model=tiny_model_dir, hidden=0)
    assert len(linear.network) == 2 and _accuracy(linear, clips) >= 0.8
    loaded = Classifier.load(linear.save(tmp_path / "linear"))
    np.testing.assert_array_equal(loaded.scores([paths[0]]), linear.scores([paths[0]]))


def test_fit_refuses_one_class_and_mismatched_labels(clips, tiny_model_dir):
    paths, _ = _split(clips, TRAIN)
    with pytest.raises(ClassifierError, match="2 classes or more; found only 'a'"):
        Classifier.fit(paths, ["a"] * len(paths), model=tiny_model_dir)
    with pytest.raises(ClassifierError, match="15 inputs but 2 labels"):
        Classifier.fit(paths, ["a", "b"], model=tiny_model_dir)


def _train_folder(clips: Path, dest: Path) -> Path:
    """The training files as DATA/LABEL/ sub-folders (symlinks)."""
    for path, label in zip(*_split(clips, TRAIN)):
        (dest / label).mkdir(parents=True, exist_ok=True)
        (dest / label / path.name).symlink_to(path)
    return dest


def test_cli_fit_from_folders_and_from_csv_train_the_same_classifier(clips, tiny_model_dir, tmp_path):
    data = _train_folder(clips, tmp_path / "data")
    res = cli("classify", "fit", data, "-o", tmp_path / "a", "--model", tiny_model_dir)
    assert res.exit_code == 0, res.output
    assert "trained on 12 files of 3 classes (early stopping" in res.stderr
    csv = tmp_path / "train.csv"
    rows = [f"data/{label}/{p.name},{label}" for p, label in zip(*_split(clips, TRAIN))]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    res = cli("classify", "fit", csv, "-o", tmp_path / "b", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0 and res.stderr == "", res.output
    assert (tmp_path / "a" / WEIGHTS_NAME).read_bytes() == (tmp_path / "b" / WEIGHTS_NAME).read_bytes()
    res = cli("classify", "fit", csv, "-o", tmp_path / "b", "--model", tiny_model_dir)
    assert res.exit_code == 2 and "already holds a classifier; pass --overwrite" in res.stderr


def test_cli_fit_leaves_out_a_bad_file_and_a_bad_row(clips, tiny_model_dir, tmp_path):
    rows = [f"{p},{label}" for p, label in zip(*_split(clips, TRAIN))]
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    csv = tmp_path / "train.csv"
    csv.write_text("\n".join(rows + ["broken.wav,low", "only-one-field"]) + "\n")
    res = cli("classify", "fit", csv, "-o", tmp_path / "clf", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 1
    assert "2 failed (15 of 16 inputs embedded)" in res.stderr
    assert "broken.wav" in res.stderr and "(left out of training)" in res.stderr
    assert f"{csv}:17: expected 2 fields path,label" in res.stderr
    meta = json.loads((tmp_path / "clf" / CONFIG_NAME).read_text())
    assert meta["training"]["n_files"] == 15 and meta["training"]["left_out"] == 1


def test_cli_fit_usage_errors(clips, tiny_model_dir, tmp_path):
    res = cli("classify", "fit", clips / "low", "-o", tmp_path / "x", "--model", tiny_model_dir)
    assert res.exit_code == 2 and "no sub-folders" in res.stderr
    res = cli("classify", "fit", tmp_path / "missing.csv", "-o", tmp_path / "x")
    assert res.exit_code == 2 and "no such file or folder" in res.stderr
    one = tmp_path / "one.csv"
    one.write_text(f"{clips / 'low' / '0.wav'},low\n{clips / 'low' / '1.wav'},low\n")
    res = cli("classify", "fit", one, "-o", tmp_path / "x", "--model", tiny_model_dir)
    assert res.exit_code == 2 and "found only 'low'" in res.stderr
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def clf_dir(fitted, tmp_path_factory) -> Path:
    return fitted.save(tmp_path_factory.mktemp("saved") / "clf")


def test_cli_predict_prints_label_and_score_and_a_bad_input_fails_alone(clf_dir, clips, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00" * 10)
    good = [clips / "high" / "5.wav", clips / "noise" / "6.wav"]
    res = cli("classify", "predict", clf_dir, good[0], bad, good[1])
    assert res.exit_code == 1
    lines = [line.split("\t") for line in res.stdout.splitlines()]
    assert [(p, label) for p, label, _ in lines] == [(str(good[0]), "high"), (str(good[1]), "noise")]
    assert all(0.5 < float(score) <= 1.0 for _, _, score in lines)
    assert "1 failed (2 of 3 inputs labelled)" in res.stderr and str(bad) in res.stderr


def test_cli_predict_json_top_k_folders_and_globs(clf_dir, clips):
    res = cli("classify", "predict", clf_dir, clips / "low", "--json")
    assert res.exit_code == 0
    rows = json.loads(res.stdout)
    assert len(rows) == PER_CLASS and {r["label"] for r in rows} == {"low"}
    assert set(rows[0]) == {"path", "label", "score"} and isinstance(rows[0]["score"], float)
    res = cli("classify", "predict", clf_dir, str(clips / "*" / "7.wav"), "--json", "-k", "2")
    rows = json.loads(res.stdout)
    assert [r["label"][0] for r in rows] == list(CLASSES)
    assert all(len(r["label"]) == len(r["score"]) == 2 and r["score"][0] >= r["score"][1] for r in rows)
    res = cli("classify", "predict", clf_dir, clips / "high" / "7.wav", "-k", "3")
    fields = res.stdout.strip().split("\t")
    assert len(fields) == 7 and fields[1] == "high" and sorted(fields[1::2]) == list(CLASSES)


def test_cli_predict_refuses_a_model_with_other_weights(clf_dir, clips, tmp_path):
    torch.manual_seed(1)
    other = save_model_folder(AudioResNet(TINY_MODEL_CONFIG), tmp_path / "other")
    res = cli("classify", "predict", clf_dir, clips / "low" / "5.wav", "--model", other)
    assert res.exit_code == 2 and res.stdout == ""
    error = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "trained on the embeddings of model" in error[0]
    assert "does not match" not in error[0] and "sha256" in error[0]
    with pytest.raises(ClassifierError, match="the model loaded has sha256"):
        Classifier.load(clf_dir, model=other)


def test_cli_predict_refuses_a_folder_that_is_not_a_classifier(tmp_path, clips):
    res = cli("classify", "predict", tmp_path, clips / "low" / "5.wav")
    assert res.exit_code == 2 and "not a classifier folder" in res.stderr
    (tmp_path / CONFIG_NAME).write_text('{"format": "something-else"}')
    res = cli("classify", "predict", tmp_path, clips / "low" / "5.wav")
    assert res.exit_code == 2 and "format 'something-else'" in res.stderr
