"""End to end: ``python -m training evaluate --model logmel`` on a few synthesized clips."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def _run(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Three classes, six 1-2 s clips each: low tones, high tones, noise bursts."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = ["path,labels,group"]
    for k in range(6):
        t = np.arange(int(SR * (1.0 + 0.2 * k))) / SR
        clips = {"low": np.sin(2 * np.pi * (200 + 20 * k) * t),
                 "high": np.sin(2 * np.pi * (3000 + 200 * k) * t),
                 "noise": rng.standard_normal(len(t))}
        for label, wave in clips.items():
            name = f"{label}_{k}.wav"
            sf.write(root / name, (0.2 * wave).astype(np.float32), SR)
            rows.append(f"{name},{label},{label}{k // 2}")
    (root / "set.csv").write_text("\n".join(rows) + "\n")
    return root / "set.csv"


@pytest.mark.slow  # subprocesses
def test_evaluate_logmel_end_to_end(manifest, tmp_path):
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    cache = tmp_path / "cache"
    args = ["evaluate", "--model", "logmel", "--dataset", str(manifest), "--out", str(out),
            "--markdown", str(md), "--cache-dir", str(cache), "--patience", "2", "--epochs", "10"]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "QbE mAP" in proc.stdout and "classifier 2L" in proc.stdout and "light sup. 1L" in proc.stdout
    assert "embedding (logmel)" in proc.stderr  # progress goes to stderr
    res = json.loads(out.read_text())
    assert res["dataset"]["n_segments"] == 18 and res["embedding_dim"] == 6144
    # Tones and noise are trivially told apart by their spectra.
    assert res["qbe"]["map"] > 0.9 and res["qbe"]["chance"] == pytest.approx(15 / 51)
    for layers in ("1", "2"):
        assert res["classifier"][layers]["map"] > 0.9
        assert "accuracy" in res["classifier"][layers]
    assert len(res["light_supervision"]["1"]["trials"]) == 3
    assert "group-aware" in res["classifier"]["split"] and "patience 2" in res["classifier"]["stopping"]
    assert res["settings"]["patience"] == 2 and res["settings"]["epochs"] == 10
    assert md.read_text().startswith("| Representation |") and "log-mel (baseline)" in md.read_text()
    assert len(list(cache.glob("logmel_set_*.npz"))) == 1

    again = _run(*args[:-4], "--no-classifiers", "--cache-dir", str(cache))
    assert again.returncode == 0, again.stderr
    assert "from cache" in again.stderr
    assert json.loads(out.read_text())["qbe"]["map"] == pytest.approx(res["qbe"]["map"])

    report = _run("evaluate-report", str(out), str(out), "-o", str(tmp_path / "t.md"))
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "t.md").read_text().splitlines()
    assert table[0].startswith("| Representation | Dataset | Dim | QbE mAP | QbE recovery |")


@pytest.mark.slow  # a subprocess
def test_evaluate_a_model_folder(manifest, tmp_path):
    """A (tiny, untrained) model folder goes through resolve_model and iter_embeddings."""
    import torch
    from audioembed import AudioResNet, ModelConfig, save_model_folder

    torch.manual_seed(0)
    folder = save_model_folder(AudioResNet(ModelConfig(layers=(1, 1, 1, 1), base_width=8)).eval(),
                               tmp_path / "tiny")
    out, cache = tmp_path / "r.json", tmp_path / "cache"
    proc = _run("evaluate", "--model", str(folder), "--dataset", str(manifest), "--out", str(out),
                "--cache-dir", str(cache), "--no-classifiers")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["embedding_dim"] == 128 and len(res["model"]["sha256"]) == 64
    assert res["dataset"]["n_windows"] == 27 and "classifier" not in res
    assert len(list(cache.glob(f"{res['model']['sha256'][:12]}_set_*.npz"))) == 1


@pytest.mark.slow  # a subprocess
def test_evaluate_missing_dataset_is_a_clear_error(tmp_path):
    proc = _run("evaluate", "--model", "logmel", "--dataset", "debian-sfx",
                "--data-root", str(tmp_path / "none"))
    assert proc.returncode != 0
    assert "python -m training corpus debian" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # a subprocess
def test_evaluate_report_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    proc = _run("evaluate-report", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "not an audioembed evaluation result" in proc.stderr


def test_cli_defaults_are_the_evaluation_settings():
    # The CLI reads its defaults from EvalSettings, as do the classifiers.
    from training.evaluation.cli import evaluate
    from training.evaluation.run import EvalSettings

    defaults = {p.name: p.default for p in evaluate.params}
    assert defaults["epochs"] == EvalSettings.epochs
    assert defaults["patience"] == EvalSettings.patience
    assert defaults["seed"] == EvalSettings.seed
    from training.evaluation.classifiers import MLPConfig

    assert MLPConfig().patience == EvalSettings.patience and MLPConfig().epochs == EvalSettings.epochs
    assert EvalSettings().mlp(2) == MLPConfig(hidden_layers=2)
