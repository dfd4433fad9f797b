"""The trainer on a tiny model and a tiny cache built from synthesized audio: exact resume,
budgets, signals, logs, configuration."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.config import ConfigError, from_dict, load_config
from training.feature_cache import build_cache
from training.trainer import LOG_NAME, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]


def synth_cache(tmp_path: Path) -> Path:
    """Five short synthetic recordings (tones, chirps, noise) cached as mel energies."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(int(sr * 2.5)) / sr
    signals = [np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * (200 + 800 * t) * t),
               rng.standard_normal(t.size) * 0.3, np.sign(np.sin(2 * np.pi * 90 * t)) * 0.2,
               np.sin(2 * np.pi * 3000 * t) * (t % 0.5 < 0.25)]
    for i, x in enumerate(signals):
        sf.write(audio / f"s{i}.wav", x.astype(np.float32), sr)
    build_cache(audio, tmp_path / "cache", progress=False)
    return tmp_path / "cache"


def tiny_config(cache: Path, tmp_path: Path, **train) -> Path:
    settings = {"batch_size": 4, "steps": 6, "checkpoint_every": 2, "log_every": 1, "seed": 3, **train}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    path = tmp_path / "tiny.toml"
    path.write_text(f'[data]\ncache = "{cache}"\n[model]\nlayers = [1, 1, 1, 1]\nbase_width = 8\n'
                    f'[train]\n{body}\n[runtime]\ndevice = "cpu"\nthreads = 1\n')
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return synth_cache(tmp_path_factory.mktemp("data"))


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(cache, tmp_path):
    config = load_config(tiny_config(cache, tmp_path))
    full = train(config, tmp_path / "full", echo=lambda s: None)
    assert full.step == 6 and full.reason == "steps"
    first = train(config, tmp_path / "split", max_triplets=12, echo=lambda s: None)
    assert first.step == 3 and first.reason == "max_triplets"
    # Steps logged after the checkpoint by a killed run are dropped, then redone.
    with open(tmp_path / "split" / LOG_NAME, "a") as f:
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n" + '{"step": 5, "lo')
    second = train(config, tmp_path / "split", resume=True, echo=lambda s: None)
    assert second.step == 6 and second.triplets_seen == 24
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    log = [json.loads(line) for line in (tmp_path / "split" / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    full_log = [json.loads(line) for line in (tmp_path / "full" / LOG_NAME).read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in full_log]
    rec = log[0]
    assert set(rec) >= {"step", "loss", "active", "d_ap", "d_an", "triplets_per_s", "lr", "samplers"}
    assert sum(rec["samplers"].values()) == 4 and rec["lr"] == 1e-4
    with pytest.raises(FileExistsError):
        train(config, tmp_path / "full", echo=lambda s: None)


def test_sigterm_finishes_the_step_checkpoints_and_exits_zero(cache, tmp_path):
    cfg = tiny_config(cache, tmp_path, steps=100000, checkpoint_every=100000)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "training", "train", "--config", str(cfg),
                             "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / LOG_NAME
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # never leave a stray trainer behind a failed test
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "signal SIGTERM" in output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] >= 2 and ckpt["step"] == json.loads(log.read_text().splitlines()[-1])["step"]


def test_config_defaults_and_errors(tmp_path):
    c = from_dict({"data": {"cache": "c"}}, base_dir=tmp_path)
    assert c.cache == str((tmp_path / "c").resolve()) and c.lr == 1e-4 and c.mining
    assert set(c.samplers) == {"gaussian_noise", "translation", "example_mixing", "temporal_proximity"}
    assert from_dict({"data": {"cache": "c"}, "train": {"mining": False}}).lr == 1e-6
    assert from_dict({"data": {"cache": "c"}, "train": {"lr": 3e-4}}).lr == 3e-4
    for bad, match in [({"data": {}}, "cache"), ({"data": {"cache": "c"}, "train": {"batchsize": 2}}, "batchsize"),
                       ({"data": {"cache": "c"}, "samplers": {"noise": {}}}, "noise"),
                       ({"data": {"cache": "c"}, "samplers": {"translation": {"sigma": 1}}}, "sigma"),
                       ({"data": {"cache": "c"}, "train": {"steps": 0}}, "steps"),
                       ({"data": {"cache": "c"}, "model": {"layers": [1, 1]}}, "layers")]:
        with pytest.raises(ConfigError, match=match):
            from_dict(bad)
    recipe = load_config(REPO / "training" / "recipes" / "tiny.toml")
    assert recipe.model.layers == (1, 1, 1, 1)
