"""The experiments layer end to end on a tiny model, a tiny cache and a tiny labelled set: two
arms run, evaluate and tabulate; a rerun skips them; --check catches a stale table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.cli import main
from training.config import ConfigError, apply_override, load_config
from training.experiments import tables
from training.experiments.recipe import RecipeError, load_experiment
from training.experiments.runner import run_experiment
from helpers_cli import cli

from test_trainer import synth_cache


def labelled_set(folder: Path) -> Path:
    """Three classes (low tone, high tone, noise), 6 clips each, as a manifest CSV."""
    rng = np.random.default_rng(1)
    sr, t = 16000, np.arange(16000) / 16000
    rows = ["path,labels"]
    for k in range(6):
        for label, x in (("low", np.sin(2 * np.pi * (200 + 20 * k) * t)),
                         ("high", np.sin(2 * np.pi * (3000 + 100 * k) * t)),
                         ("noise", rng.standard_normal(t.size))):
            name = f"{label}_{k}.wav"
            sf.write(folder / name, (0.3 * x).astype(np.float32), sr)
            rows.append(f"{name},{label}")
    (folder / "toy.csv").write_text("\n".join(rows) + "\n")
    return folder / "toy.csv"


def write_recipe(tmp_path: Path, cache: Path, dataset: Path) -> Path:
    base = tmp_path / "base.toml"
    base.write_text(f'[data]\ncache = "{cache}"\n[model]\nlayers = [1, 1, 1, 1]\nbase_width = 8\n'
                    '[train]\nbatch_size = 4\ncheckpoint_every = 2\nlog_every = 1\n'
                    '[runtime]\ndevice = "cpu"\nthreads = 1\nbf16 = false\n'
                    f'[dev]\ndataset = "{dataset}"\nevery = 2\nmax_windows = 2\n')
    recipe = tmp_path / "exp.toml"
    (tmp_path / "card.md").write_text("# Card\n\n<!-- toy:start -->\n<!-- toy:end -->\n\nAfter.\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("# Docs\n\n<!-- toy:start -->\n<!-- toy:end -->\n")
    recipe.write_text(f'''
[experiment]
title = "toy"
base = "base.toml"
triplets = 16
runs = "runs"
results = "results/toy"
markdown = "results/toy.md"
datasets = ["{dataset}"]
eval_cache = "eval_cache"
set = ["train.lr=1e-3"]
card = ["card.md", "docs/README.md"]
evaluation = {{epochs = 3, light_steps = 10, light_per_class = 2, light_trials = 2}}

[arms.logmel]
kind = "evaluate"
model = "logmel"
label = "Log-mel"
role = "baseline"
tables = ["2", "3"]

[arms.noise]
label = "Noise"
tables = ["2", "1"]
sweep = {{param = "σ", value = 0.5}}
set = ["samplers={{gaussian_noise={{sigma=0.5}}}}", "train.mining=true"]

[arms.scratch]
kind = "scratch"
label = "Scratch"
tables = ["3"]
scratch = {{steps = 3, batch_size = 4, layers = [1, 1, 1, 1], base_width = 8, bf16 = false}}
''')
    return recipe


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    cache = synth_cache(tmp)
    (tmp / "toy").mkdir()
    recipe = write_recipe(tmp, cache, labelled_set(tmp / "toy"))
    result = cli("experiment", recipe, command=main)
    assert result.exit_code == 0, result.output
    return tmp, recipe


@pytest.mark.slow  # trains (the finished experiment)
def test_experiment_runs_both_arms_and_tabulates(finished):
    tmp, recipe = finished
    exp = load_experiment(recipe)
    noise = json.loads((tmp / "results/toy/noise.json").read_text())
    assert noise["train"]["triplets_seen"] == 16 and noise["train"]["steps"] == 4
    assert noise["train"]["config"]["samplers"] == {"gaussian_noise": {"sigma": 0.5}}
    assert noise["train"]["config"]["train"]["lr"] == 1e-3  # the experiment's --set reached it
    assert [p["step"] for p in noise["train"]["dev_curve"]] == [0, 2, 4]
    assert noise["machine"]["cpus"] >= 1 and noise["train"]["wall_s"] > 0
    ds = exp.datasets[0]
    q = noise["results"][ds]["qbe"]["map"]
    assert 0 < q <= 1 and noise["results"][ds]["classifier"]["1"]["map"] > 0
    logmel = json.loads((tmp / "results/toy/logmel.json").read_text())
    assert logmel["results"][ds]["embedding_dim"] == 96 * 64 and "train" not in logmel

    md = (tmp / "results/toy.md").read_text()
    assert md == tables.render(exp)
    card = (tmp / "card.md").read_text()
    assert "| Noise | 16 |" in card and card.endswith("<!-- toy:end -->\n\nAfter.\n")
    assert "![dev_qbe](figures/dev_qbe.png)" in card
    # The same block in a second card, its links relative to that card's folder.
    docs = (tmp / "docs" / "README.md").read_text()
    assert "| Noise | 16 |" in docs and "![dev_qbe](../figures/dev_qbe.png)" in docs
    assert "[`../results/toy.md`](../results/toy.md)" in docs
    rows = [line for line in md.splitlines() if line.startswith("| Log-mel |") or line.startswith("| Noise |")]
    # Table 2 (both rows), Table 1 (noise), Table 3 (log-mel), with the measured numbers in them.
    assert len(rows) == 4
    scratch = json.loads((tmp / "results/toy/scratch.json").read_text())["results"][ds]["light_supervision"]["scratch"]
    assert len(scratch["trials"]) == 2 and 0 < scratch["map"] <= 1
    # Trial t trains on the very clips the shallow light-supervision classifiers of trial t used.
    shallow = logmel["results"][ds]["light_supervision"]["1"]["trials"]
    assert [t["n_train"] for t in scratch["trials"]] == [t["n_train"] for t in shallow]
    assert f"| Scratch | trained end to end | {scratch['map']:.3f} ± {scratch['map_sd']:.3f} |" in md
    # Its provenance row says how long it ran and the command that reruns it alone.
    wall = json.loads((tmp / "results/toy/scratch.json").read_text())["run_wall_s"]
    assert (f"| scratch | scratch | – | {wall / 60:.0f} min (1 proc.) |" in md
            and "--only scratch` |" in md)
    noise_t2 = next(r for r in rows if r.startswith("| Noise | 16 |"))
    assert f"| {q:.3f} |" in noise_t2


@pytest.mark.slow  # trains (the finished experiment)
def test_scratch_resumes_from_its_stored_trials(finished, monkeypatch):
    tmp, recipe = finished
    exp = load_experiment(recipe)
    arm = next(a for a in exp.arms if a.name == "scratch")
    stored = sorted((exp.runs / "scratch").glob("scratch-*-trial*.json"))
    assert len(stored) == 2  # one per trial of the one dataset
    before = json.loads((tmp / "results/toy/scratch.json").read_text())["results"]
    from training.experiments import supervised_baseline

    def no_training(*a, **k):
        raise AssertionError("a stored trial was trained again")
    monkeypatch.setattr(supervised_baseline, "train_and_score", no_training)
    again = supervised_baseline.run_scratch(exp, arm, exp.runs / "scratch", log=lambda m: None)
    assert json.loads(json.dumps(again)) == before  # as the arm JSON stores it
    # A stored trial made with other clips or settings is not reused.
    kept = json.loads(stored[0].read_text())
    kept["key"]["seed"] += 1
    stored[0].write_text(json.dumps(kept))
    with pytest.raises(AssertionError, match="trained again"):
        supervised_baseline.run_scratch(exp, arm, exp.runs / "scratch", log=lambda m: None)


@pytest.mark.slow  # trains (the finished experiment)
def test_figures_are_drawn_from_the_results(finished):
    tmp, _ = finished
    for name in ("dev_qbe.png", "table2_bars.png"):
        png = tmp / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
    assert not (tmp / "figures" / "map_2d.png").exists()  # the toy recipe asks for no map


@pytest.mark.slow  # trains (the finished experiment)
def test_rerun_skips_finished_arms_and_check_passes(finished):
    tmp, recipe = finished
    exp = load_experiment(recipe)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp / "results/toy").iterdir()}
    logs = []
    assert run_experiment(exp, log=logs.append) == []
    assert sum("skipped" in line for line in logs) == 3
    assert {p.name: p.stat().st_mtime_ns for p in (tmp / "results/toy").iterdir()} == before
    result = cli("experiment", recipe, "--check", command=main)
    assert result.exit_code == 0, result.output


@pytest.mark.slow  # trains (the finished experiment)
def test_check_fails_on_a_stale_table_or_card(finished, tmp_path):
    _, recipe = finished
    exp = load_experiment(recipe)
    for path in (exp.markdown, *exp.cards):
        original = path.read_text()
        try:
            path.write_text(original.replace("| Noise |", "| Noise (edited) |", 1))
            result = cli("experiment", recipe, "--check", command=main)
            assert result.exit_code == 1 and "stale" in result.output
        finally:
            path.write_text(original)


def test_section_override_replaces_the_whole_table(tmp_path):
    d = {"samplers": {"translation": {"weight": 1.0}, "gaussian_noise": {}}}
    apply_override(d, "samplers={example_mixing={alpha=0.5}}")
    assert d["samplers"] == {"example_mixing": {"alpha": 0.5}}
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        apply_override(d, "samplers=3")


def test_recipe_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[experiment]\nbase = "b.toml"\ntriplets = 10\nruns = "r"\nresults = "x"\n'
                   'markdown = "m.md"\ndatasets = ["fsdd"]\n[arms.a]\nkind = "evaluate"\n')
    with pytest.raises(RecipeError, match="needs model"):
        load_experiment(bad)
    bad.write_text(bad.read_text().replace('kind = "evaluate"', 'tables = ["1"]'))
    with pytest.raises(RecipeError, match="sweep"):
        load_experiment(bad)


def test_the_paper_recipe_resolves_to_valid_training_configs():
    from training.experiments.runner import training_overrides

    exp = load_experiment(Path(__file__).resolve().parents[1] / "training/recipes/debian/paper_tables.toml")
    for arm in exp.arms:
        if arm.kind != "train":
            continue
        config = load_config(exp.base, training_overrides(exp, arm, Path("/nonexistent")))
        assert config.dev["dataset"] == "debian-sfx-eval"
        assert (config.lr, config.mining) in ((1e-4, True), (1e-6, False)), arm.name
        if "explicit_label" in config.samplers:
            assert arm.train_on == "debian-sfx-topline-train" and arm.role == "topline"


@pytest.mark.slow  # trains (the finished experiment)
def test_tables_leave_out_columns_an_experiment_has_nothing_for(finished):
    """No topline arm: no recovery columns. ``paper_column = false``: no paper side column."""
    import dataclasses

    _, recipe = finished
    exp = load_experiment(recipe)
    with_paper = tables.render(exp)
    without = tables.render(dataclasses.replace(exp, paper_column=False))
    for md in (with_paper, without):
        assert "recovery" not in md.lower()
        assert "| Representation | Triplets | QbE mAP | Classifier mAP, 1 layer |" in md
    assert with_paper.count("Paper (AudioSet)") == 3  # Tables 2, 1 and 3
    assert "Paper (AudioSet)" not in without
    table3 = without.split("## Table 3")[1]
    assert "Paper" not in table3 and "| Scratch | trained end to end |" in table3
    # Every row keeps as many cells as its header.
    for line in without.splitlines():
        if line.startswith("| Log-mel |") and "hidden layer" not in line:
            assert line.count("|") == 6


@pytest.mark.parametrize("recipe", ["paper_tables.toml", "v03_ab.toml"])
def test_the_committed_experiment_tables_match_their_results(recipe):
    """What `python -m training experiment RECIPE --check` checks, on every CI run."""
    exp = load_experiment(Path(__file__).resolve().parents[1] / "training/recipes/debian" / recipe)
    if not exp.markdown.exists():
        pytest.skip(f"no {recipe} tables committed yet")
    assert tables.check(exp) is None
