"""Run an experiment: every arm trained from scratch to the same triplet budget, exported,
evaluated on every dataset, and written as one JSON; arms whose JSON exists are skipped.

Resumable at any point: a training arm resumes from its run folder's checkpoint (same world
size, so the batches are those of an uninterrupted run), and an arm's evaluations are kept per
dataset in its run folder until the arm's JSON is written. Rerunning after an interruption
redoes at most one checkpoint interval and one dataset's evaluation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from audioembed.outputs import atomic_write, write_csv
from training.experiments.recipe import Arm, Experiment
from training.machine import machine_info

SCHEMA = "audioembed-experiment-arm/1"
REPO_ROOT = Path(__file__).resolve().parents[2]


class ExperimentError(RuntimeError):
    """An arm that could not be completed; the message names the arm and the step."""


def arm_json(exp: Experiment, arm: Arm) -> Path:
    return exp.results / f"{arm.name}.json"


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _labelled_cache(exp: Experiment, dataset: str, log) -> Path:
    """A feature cache of a labelled dataset's clips (for the explicit-label topline), built once
    under the experiment's run folder; each clip is its own recording, with its labels."""
    from training.evaluation.datasets import load_dataset
    from training.feature_cache import build_cache

    out = exp.runs / "_caches" / dataset
    ds = load_dataset(dataset)
    manifest = exp.runs / "_caches" / f"{dataset}.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_csv(manifest, [["path", "label"]] + [[path, ";".join(labels)] for path, labels
                                               in zip(ds.paths, ds.labels)], lineterminator="\r\n")
    report = build_cache(manifest, out, progress=False)
    log(f"cache {out}: {report.added} clips added, {report.skipped} already cached, "
        f"{len(report.failures)} failed")
    return out


def training_overrides(exp: Experiment, arm: Arm, cache: Path | None) -> list[str]:
    """The ``--set`` list of a training arm: the experiment's, the arm's, then its cache."""
    out = list(exp.overrides) + list(arm.overrides)
    if exp.seed is not None:
        out.append(f"train.seed={exp.seed}")
    if cache is not None:
        out.append(f'data.cache="{cache}"')
    return out


def train_command(exp: Experiment, run_dir: Path, overrides: list[str], resume: bool) -> list[str]:
    """The command line that trains one arm (torchrun for ``nproc`` > 1)."""
    head = [sys.executable, "-m", "training"] if exp.nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={exp.nproc}",
         "-m", "training"]
    cmd = head + ["train", "--config", str(exp.base), "--out", str(run_dir),
                  "--max-triplets", str(exp.triplets)]
    for o in overrides:
        cmd += ["--set", o]
    return cmd + (["--resume"] if resume else [])


def _train(exp: Experiment, arm: Arm, run_dir: Path, log) -> dict:
    from training.trainer import CHECKPOINT_NAME, load_checkpoint

    cache = _labelled_cache(exp, arm.train_on, log) if arm.train_on else None
    overrides = training_overrides(exp, arm, cache)
    ckpt_path = run_dir / CHECKPOINT_NAME
    resume = ckpt_path.exists()
    if exp.nproc == 1:
        from training.config import load_config
        from training.trainer import train

        train(load_config(exp.base, overrides), run_dir, resume=resume, max_triplets=exp.triplets, echo=log)
    else:
        cmd = train_command(exp, run_dir, overrides, resume)
        log("$ " + " ".join(cmd))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if subprocess.run(cmd, env=env).returncode != 0:
            raise ExperimentError(f"arm {arm.name}: training exited with an error (see above)")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt["triplets_seen"] < exp.triplets:
        raise ExperimentError(f"arm {arm.name}: training stopped at {ckpt['triplets_seen']} of "
                              f"{exp.triplets} triplets; rerun to resume it")
    return {"overrides": overrides, "config": portable(ckpt["config"]), "steps": int(ckpt["step"]),
            "triplets_seen": int(ckpt["triplets_seen"]), "world_size": int(ckpt.get("world_size", 1)),
            "wall_s": round(float(ckpt.get("elapsed_s", 0.0)), 1),
            "dev_curve": dev_curve(run_dir / "train_log.jsonl"),
            "command": user_command(exp, overrides)}


def user_command(exp: Experiment, overrides: list[str]) -> str:
    """The arm's training as a user would type it from the repository root (for the JSON)."""
    try:
        config = exp.base.relative_to(REPO_ROOT)
    except ValueError:
        config = exp.base
    head = "python -m training" if exp.nproc == 1 else \
        f"torchrun --standalone --nproc_per_node {exp.nproc} -m training"
    sets = " ".join(f"--set '{portable(o)}'" for o in overrides)
    return f"{head} train --config {config} --out RUN --max-triplets {exp.triplets} {sets}"


def portable(obj):
    """``obj`` with this machine's home folder written as ``~`` in every string."""
    home = str(Path.home())
    if isinstance(obj, str):
        return "~" + obj[len(home):] if obj.startswith(home + os.sep) else obj
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v) for v in obj]
    return obj


def dev_curve(log_path: Path) -> list[dict]:
    """``[{triplets_seen, qbe_map}, ...]`` from a run log's dev rows (the figure's curve)."""
    rows = []
    if log_path.exists():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "dev" in row:
                rows.append({"step": row["step"], "triplets_seen": row["triplets_seen"],
                             "qbe_map": row["dev"]["qbe_map"]})
    return rows


def _model_spec(exp: Experiment, arm: Arm, run_dir: Path) -> str:
    if arm.kind == "evaluate":
        return arm.model
    from training.export import export_checkpoint
    from training.trainer import CHECKPOINT_NAME

    folder = run_dir / "model"
    export_checkpoint(run_dir / CHECKPOINT_NAME, folder, name=f"{exp.title}/{arm.name}")
    return str(folder)


def _evaluate(exp: Experiment, arm: Arm, model: str, run_dir: Path, log) -> dict:
    """Every dataset's results; each is kept in the run folder as soon as it is done."""
    from threadpoolctl import threadpool_limits

    from training.evaluation.run import evaluate_model

    out = {}
    expected = _sha256_of(model)
    for dataset in exp.datasets:
        partial = run_dir / f"eval_{dataset}.json"
        results = _read_json(partial)
        if results is not None and results["model"].get("sha256") != expected:
            results = None  # evaluated before the model was retrained: stale
        if results is None:
            log(f"arm {arm.name}: evaluating {model} on {dataset}")
            threads = torch.get_num_threads()
            torch.set_num_threads(exp.eval_threads)
            try:
                with threadpool_limits(limits=exp.eval_threads):
                    results = evaluate_model(model, dataset, exp.eval_settings(),
                                             cache_dir=exp.eval_cache, log=log)
                    if arm.extra_light_layers:
                        results["light_supervision_extra"] = _extra_light(model, dataset, arm, exp, log)
            finally:
                torch.set_num_threads(threads)
            results = portable(results)
            _write_json(partial, results)
        out[dataset] = results
    return out


def _sha256_of(model: str) -> str | None:
    from training.evaluation.features import model_descriptor

    return model_descriptor(model)[0]["sha256"]


def _extra_light(model: str, dataset: str, arm: Arm, exp: Experiment, log) -> dict:
    """Light supervision with other hidden-layer counts (Table 3's 4x512 log-mel net)."""
    from training.evaluation import classifiers as clf
    from training.evaluation.run import classifier_data

    settings = exp.eval_settings()
    data, splits, _ = classifier_data(model, dataset, settings, cache_dir=exp.eval_cache, log=log)
    return {str(n): clf.light_supervision(data, splits, settings.light_mlp(n), settings.light_per_class,
                                          settings.light_trials, settings.seed, log)
            for n in arm.extra_light_layers}


def run_arm(exp: Experiment, arm: Arm, log: Callable[[str], None] = print) -> dict:
    """Train (if needed), evaluate and record one arm; returns its JSON."""
    run_dir = exp.runs / arm.name
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    record = {"schema": SCHEMA, "experiment": exp.title, "arm": arm.describe(),
              "budget_triplets": exp.triplets if arm.kind == "train" else None}
    if arm.kind == "train":
        record["train"] = _train(exp, arm, run_dir, log)
    if arm.kind == "scratch":
        from training.experiments.supervised_baseline import run_scratch

        record["results"] = run_scratch(exp, arm, run_dir, log)
    else:
        model = _model_spec(exp, arm, run_dir)
        record["results"] = _evaluate(exp, arm, model, run_dir, log)
    record["machine"] = machine_info()
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # This invocation's wall time: evaluation plus whatever training it did (the total training
    # time over all resumes is train.wall_s).
    record["run_wall_s"] = round(time.time() - t0, 1)
    _write_json(arm_json(exp, arm), record)
    log(f"arm {arm.name}: wrote {arm_json(exp, arm)}")
    return record


def run_experiment(exp: Experiment, only: list[str] | None = None,
                   log: Callable[[str], None] = print) -> list[str]:
    """Run every arm (or ``only`` these) whose JSON is missing; returns the arms run."""
    done = []
    for arm in exp.arms:
        if only and arm.name not in only:
            continue
        if arm_json(exp, arm).exists():
            log(f"arm {arm.name}: results exist ({arm_json(exp, arm)}); skipped")
            continue
        log(f"arm {arm.name}: {arm.kind}")
        run_arm(exp, arm, log)
        done.append(arm.name)
    return done
