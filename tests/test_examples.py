"""The scripts in examples/ run as a user would run them, on small data, with the tiny model."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_cli import cli

EXAMPLES = Path(__file__).parents[1] / "examples"


def run_example(name: str, args: list, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def fsdd_subset(fsdd: Path, tmp_path: Path, digits: str, per_digit: int) -> Path:
    """Links to Jackson's first ``per_digit`` recordings of each of ``digits`` in ``tmp_path / "fsdd"``."""
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for d in digits:
        for i in range(per_digit):
            src = fsdd / f"{d}_jackson_{i}.wav"
            (folder / src.name).symlink_to(src)
    return folder


def test_query_by_example_on_fsdd(fsdd_recordings, tiny_model_dir, tmp_path, monkeypatch, capsys):
    folder = fsdd_subset(fsdd_recordings, tmp_path, "37", 3)
    query = folder / "7_jackson_1.wav"
    out = run_example("query_by_example.py", [query, folder, "--model", tiny_model_dir, "--top", "4"],
                      monkeypatch, capsys)
    lines = out.splitlines()
    assert lines[0] == f"query: {query}  (6 sounds searched)"
    assert len(lines) == 5
    first_score, first_path = lines[1].split()[1:]
    assert float(first_score) == pytest.approx(1.0, abs=1e-4) and first_path == str(query)
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)


def test_few_shot_classifier_on_fsdd(fsdd_recordings, tiny_model_dir, tmp_path, monkeypatch, capsys):
    # "one" against "six": the hiss of the /s/ fills high bands that even the tiny random
    # network's embedding responds to (both classifiers were 10/10 when this was written;
    # "zero" against "one" is near chance for it).
    folder = fsdd_subset(fsdd_recordings, tmp_path, "16", 10)
    out = run_example("few_shot_classifier.py", [folder, "--model", tiny_model_dir, "--shots", 5,
                                                  "--test", 5], monkeypatch, capsys)
    lines = out.splitlines()
    assert lines[0] == "classes: 2 (1 6); 5 training and 5 held-out clips per class"
    accuracies = {line.split(":")[0]: float(line.split()[-1]) for line in lines[1:]}
    assert accuracies["chance"] == 0.5
    for key in ("nearest centroid accuracy", "logistic regression accuracy"):
        assert accuracies[key] >= 0.8, out  # 10 held-out clips: at least 8 right


def test_few_shot_classifier_separates_easy_classes(tiny_model_dir, make_wav, tmp_path,
                                                    monkeypatch, capsys):
    # Low and high tones: even a random network's embeddings separate them, so anything
    # below perfect accuracy means the labels, the split or the classifier are wrong.
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for label, freq in (("low", 300.0), ("high", 3000.0)):
        for i in range(7):
            f = freq * rng.uniform(0.9, 1.1)
            tone = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)
            make_wav(f"tones/{label}_{i}.wav", tone.astype(np.float32))
    out = run_example("few_shot_classifier.py", [tmp_path / "tones", "--model", tiny_model_dir,
                                                  "--shots", 4, "--test", 3], monkeypatch, capsys)
    assert "classes: 2 (high low)" in out
    assert "logistic regression accuracy: 1.000" in out
    assert "nearest centroid accuracy:    1.000" in out


def test_few_shot_classifier_refuses_too_few_clips(tiny_model_dir, make_wav, tmp_path,
                                                   monkeypatch, capsys):
    make_wav("few/a_0.wav", seconds=0.3)
    with pytest.raises(SystemExit, match="class 'a' has 1 clips"):
        run_example("few_shot_classifier.py", [tmp_path / "few", "--model", tiny_model_dir],
                    monkeypatch, capsys)


def test_the_quick_start_clip_is_small_licensed_and_reproducible(tmp_path, tiny_model_dir):
    clip = EXAMPLES / "audio" / "chime_and_knocks.wav"
    assert clip.stat().st_size < 100_000
    notes = (EXAMPLES / "audio" / "README.md").read_text()
    assert "CC0" in notes and "make_clip.py" in notes
    # The shipped bytes are what the script makes: its stated source is the real one.
    again = runpy.run_path(str(EXAMPLES / "audio" / "make_clip.py"))["write"](tmp_path / "again.wav")
    assert again.read_bytes() == clip.read_bytes()
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert "audioembed extract examples/audio/chime_and_knocks.wav -o emb.npy" in readme
    res = cli("extract", clip, "-o", tmp_path / "emb.npy", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    e = np.load(tmp_path / "emb.npy")
    assert e.shape == (128,) and abs(float(np.linalg.norm(e)) - 1) < 1e-4
