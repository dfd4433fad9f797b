"""``python -m training adapt``: a tiny base model adapted to ~100 synthesized clips for a few
steps of the release recipe; export, lineage, resume, refusal of too little audio."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed import embed, load_model
from audioembed.model_folder import sha256_file
from training.adapt import RECIPE, STATE_NAME
from training.checkpoint import read_checkpoint
from training.cli import main
from training.feature_cache import FeatureCache
from training.trainer import LOG_NAME
from helpers_cli import cli

SR = 16_000
# One intra-op thread: on a loaded 2-core machine the tiny network's small convolutions run
# faster so, and every test stays a few seconds.
FAST = ["--set", "runtime.threads=1"]


def clip(kind: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One of six kinds of sound: tone, chirp, noise burst, square wave, clicks, AM tone."""
    t = np.arange(int(SR * seconds)) / SR
    f = rng.uniform(150, 3000)
    x = [np.sin(2 * np.pi * f * t),
         np.sin(2 * np.pi * (f + rng.uniform(200, 2000) * t) * t),
         rng.standard_normal(t.size) * (t % rng.uniform(0.2, 0.6) < 0.15),
         np.sign(np.sin(2 * np.pi * f / 10 * t)) * 0.5,
         (rng.random(t.size) < 0.002).astype(float),
         np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 8) * t))][kind % 6]
    return (0.3 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_clips(folder: Path, n: int, seconds: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(folder / f"c{i:03d}.wav", clip(i, seconds * rng.uniform(0.7, 1.3), rng), SR)
    return folder


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """~100 clips of 1.4-2.6 s (about 200 s in all) and one unreadable file."""
    folder = write_clips(tmp_path_factory.mktemp("user_audio") / "recordings", 100, 2.0)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00 not a wav file")
    return folder


def run(*args):
    """``python -m training adapt ARGS...``."""
    return cli("adapt", *args, command=main)


@pytest.mark.slow  # trains (adapts)
def test_adapt_exports_a_loadable_model_that_differs_from_its_base_with_its_lineage(
        audio, tiny_model_dir, tmp_path):
    out = tmp_path / "mine"
    res = run(audio, "--out", out, "--from", tiny_model_dir, "--triplets", 64, *FAST)
    assert res.exit_code == 0, res.output
    assert f"wrote {out} (64 triplets)" in res.stdout
    assert "broken.wav" in res.stderr and "skipped" in res.stderr  # the unreadable file, listed
    assert "adapting" in res.stderr and "triplet" in res.stderr  # the progress bar

    adapted, base = load_model(out), load_model(tiny_model_dir)
    assert not torch.equal(adapted.fc.weight, base.fc.weight)
    x = clip(1, 2.0, np.random.default_rng(7))
    e_adapted, e_base = embed(x, SR, model=out), embed(x, SR, model=tiny_model_dir)
    assert e_adapted.shape == e_base.shape == (128,)
    assert np.abs(e_adapted - e_base).max() > 1e-3

    from audioembed.hear import load_model as hear_load
    assert hear_load(str(out)).timestamp_embedding_size == 128

    prov = json.loads((out / "config.json").read_text())["provenance"]
    lineage = prov["adaptation"]
    assert lineage["base_model_sha256"] == sha256_file(tiny_model_dir / "model.safetensors")
    cache = FeatureCache(out / "cache")
    assert lineage["data"]["fingerprint_sha256"] == cache.fingerprint()
    assert lineage["data"]["files"] == 100 and lineage["data"]["files_failed"] == 1
    assert lineage["triplets"] == prov["triplets_seen"] == 64
    assert lineage["recipe"] == "training/recipes/debian/joint_v04.toml"
    assert lineage["recipe_sha256"] == sha256_file(RECIPE)
    # The release recipe's sections, with the schedule planned over this budget and no dev set.
    config = prov["training_config"]
    assert config["loss"]["kind"] == "soft-margin" and config["loss"]["xbm_size"] == 4096
    assert config["schedule"]["kind"] == "cosine" and config["schedule"]["total_triplets"] == 64
    assert "dev" not in config and config["model"] == base.config.to_dict()
    card = (out / "README.md").read_text()
    for fact in (lineage["base_model_sha256"], lineage["data"]["fingerprint_sha256"], "64 triplets",
                 lineage["recipe"]):
        assert fact in card, fact

    # A finished run says so, exits 0 and leaves the model as it is.
    weights = sha256_file(out / "model.safetensors")
    again = run(audio, "--out", out, "--from", tiny_model_dir, *FAST)
    assert again.exit_code == 0, again.output
    assert "already finished (64 triplets)" in again.stdout
    assert sha256_file(out / "model.safetensors") == weights


@pytest.mark.slow  # trains (adapts)
def test_an_interrupted_adapt_resumes_where_it_stopped(audio, tiny_model_dir, tmp_path, monkeypatch):
    import training.trainer

    real_train = training.trainer.train

    def killed_after_one_step(config, out, **kwargs):
        # As a SIGTERM after the first step would: the trainer checkpoints and returns.
        result = real_train(config, out, **dict(kwargs, max_triplets=32))
        result.reason = "signal SIGTERM"
        return result

    out = tmp_path / "mine"
    pattern = str(audio / "c0*.wav")  # a glob: the first 100 clips
    args = [pattern, "--out", out, "--from", tiny_model_dir, "--triplets", 96, *FAST,
            "--set", "train.log_every=1"]
    monkeypatch.setattr(training.trainer, "train", killed_after_one_step)
    first = run(*args)
    assert first.exit_code == 1 and "at 32 of 96 triplets; rerun the same command" in first.output
    assert not (out / "config.json").exists()
    monkeypatch.setattr(training.trainer, "train", real_train)

    other = run(*args[:5], "--triplets", 128)
    assert other.exit_code == 1 and "was started with planned 96, not 128" in other.output

    second = run(*args)
    assert second.exit_code == 0, second.output
    assert "cached" not in second.stderr  # the complete cache is reused as it is
    steps = [json.loads(line)["step"] for line in (out / "adapt" / LOG_NAME).read_text().splitlines()]
    assert steps == [1, 2, 3]  # the first run's step, then the resumed ones, each once
    code = read_checkpoint(out / "adapt" / "checkpoint.pt")["code"]
    assert [c["from_step"] for c in code] == [0, 1]
    assert json.loads((out / "config.json").read_text())["provenance"]["adaptation"]["triplets"] == 96
    assert json.loads((out / "adapt" / STATE_NAME).read_text())["finished"] is True


@pytest.mark.slow  # trains (adapts)
def test_a_minutes_budget_on_a_cache_built_beforehand(audio, tiny_model_dir, tmp_path):
    from training.feature_cache import build_cache

    build_cache(audio, tmp_path / "features", progress=False)
    out = tmp_path / "mine"
    res = run(audio, "--out", out, "--from", tiny_model_dir, "--minutes", 0.02,
              "--cache", tmp_path / "features", *FAST)
    assert res.exit_code == 0, res.output
    assert "cached" not in res.stderr and not (out / "cache").exists()  # used as it is
    lineage = json.loads((out / "config.json").read_text())["provenance"]["adaptation"]
    # The plan is 0.02 min at the rate measured here, said before training.
    planned = lineage["budget"]["planned_triplets"]
    assert lineage["budget"]["minutes"] == 0.02 and planned >= 1
    assert f"planning {planned:,} triplets for 0.02 minutes" in res.output
    assert 32 <= lineage["triplets"] <= max(planned, 32) + 31  # stopped by the plan or the 1.2 s
    assert lineage["data"]["fingerprint_sha256"] == FeatureCache(tmp_path / "features").fingerprint()
    # The same command again finds the run finished: the measured plan is kept, not re-measured.
    again = run(audio, "--out", out, "--from", tiny_model_dir, "--minutes", 0.02,
                "--cache", tmp_path / "features", *FAST)
    assert again.exit_code == 0, again.output
    assert "planning" not in again.output


@pytest.mark.slow  # trains (measures training steps)
def test_a_minutes_plan_is_the_rate_measured_on_this_machine(audio, tiny_model_dir, tmp_path):
    from training.adapt import LOOP_SHARE, measured_rate, plan_triplets, recipe_config
    from training.distributed import setup
    from training.feature_cache import build_cache

    build_cache(audio, tmp_path / "features", progress=False)
    base = load_model(tiny_model_dir).config.to_dict()
    threads = torch.get_num_threads()
    config = recipe_config(tmp_path / "features", str(tiny_model_dir), base, 1000,
                           ["runtime.threads=1", "train.batch_size=4"])
    rate = measured_rate(config, setup("cpu"))
    assert np.isfinite(rate) and rate > 0
    assert torch.get_num_threads() == threads  # measured on the run's count, the caller's restored
    assert plan_triplets(None, 2.0, 10.0) == int(120 * 10.0)
    assert 0 < LOOP_SHARE <= 1


@pytest.mark.parametrize("n, seconds", [(3, 2.0), (12, 1.0)], ids=["few files", "few seconds"])
def test_adapt_refuses_too_little_audio_in_one_line(tmp_path, tiny_model_dir, n, seconds):
    folder = write_clips(tmp_path / "little", n, seconds)
    res = run(folder, "--out", tmp_path / "m", "--from", tiny_model_dir, *FAST)
    assert res.exit_code == 1
    message = res.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: ") and "too little audio to adapt to" in message
    assert "Traceback" not in res.output
    assert not (tmp_path / "m" / "config.json").exists()


def test_adapt_writes_only_into_a_new_folder_or_its_own_run(tmp_path, tiny_model_dir, audio):
    res = run(audio, "--out", tiny_model_dir, *FAST)
    assert res.exit_code == 1 and "adapt did not make" in res.output
    res = run(audio, "--out", audio, *FAST)  # the audio folder itself
    assert res.exit_code == 1 and "not empty (broken.wav, c000.wav, c001.wav, ...)" in res.output


@pytest.mark.slow  # torchrun, trains
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_adapt_under_torchrun_trains_on_every_process_and_exports_once(audio, tiny_model_dir, tmp_path):
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "mine"
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--standalone", "-m", "training", "adapt", str(audio), "--out", str(out),
                             "--from", str(tiny_model_dir), "--triplets", "48", *FAST,
                             "--set", "train.batch_size=8"],
                            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # torchrun forwards SIGTERM to its workers (which run in sessions of their own) and
        # stops them; only then is the launcher's group killed.
        proc.terminate()
        try:
            proc.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the group has already ended
                os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail("torchrun did not finish in 300 s:\n" + output[-3000:])
    assert proc.returncode == 0, output[-5000:]
    assert output.count("wrote ") == 1  # the main process reports, the other says nothing
    prov = json.loads((out / "config.json").read_text())["provenance"]
    # 3 steps of 8 triplets on each of 2 processes.
    assert prov["world_size"] == 2 and prov["steps"] == 3 and prov["adaptation"]["triplets"] == 48
    load_model(out)


def test_the_recipe_is_the_release_recipe_with_this_runs_data_network_and_plan(tiny_model_dir):
    from training.adapt import DEFAULT_TRIPLETS, plan_triplets, recipe_config
    from training.config import load_config

    release = load_config(RECIPE).to_dict()
    base = load_model(tiny_model_dir).config.to_dict()
    got = recipe_config("/data/cache", str(tiny_model_dir), base, 12_000).to_dict()
    # What adapt changes, and nothing else.
    assert got["data"] == {"cache": "/data/cache"} and got["model"] == base
    assert got["train"]["init"] == str(tiny_model_dir) and got["train"]["steps"] == 12_000 // 32
    assert got["schedule"] == dict(release["schedule"], total_triplets=12_000, warmup_triplets=1_200)
    assert "dev" in release and "dev" not in got
    warmup = release["schedule"]["warmup_triplets"]
    for section in ("data", "model", "schedule", "dev"):
        release.pop(section, None), got.pop(section, None)
    for key in ("init", "steps"):
        release["train"].pop(key), got["train"].pop(key)
    assert got == release
    # A long budget keeps the recipe's warmup; an override applies on top.
    long = recipe_config("/c", "x", base, 200_000, ["train.batch_size=64"])
    assert long.schedule["warmup_triplets"] == warmup and long.steps == 3125
    assert plan_triplets(None, None) == DEFAULT_TRIPLETS and plan_triplets(500, 2.0) == 500

