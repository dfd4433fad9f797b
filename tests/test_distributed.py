"""Two-process DistributedDataParallel training on CPU (gloo), launched the way users launch it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.feature_cache import FeatureCache, build_cache
from training.samplers import make_sampler, sample_batch
from training.trainer import LOG_NAME, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_two_ranks_end_with_identical_parameters(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(audio / f"n{i}.wav", (0.2 * (i + 1) * rng.standard_normal(32000)).astype(np.float32), 16000)
    build_cache(audio, tmp_path / "cache", progress=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ncache = "{tmp_path / "cache"}"\n[model]\nlayers = [1, 1, 1, 1]\nbase_width = 8\n'
                   '[train]\nbatch_size = 4\nsteps = 3\nlog_every = 1\n[runtime]\ndevice = "cpu"\nthreads = 1\n')
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    # A session of its own, so a hung run's workers can be killed with the launcher.
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--standalone", "-m", "training", "train", "--config", str(cfg),
                             "--out", str(out), "--write-checksums"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail("torchrun did not finish in 180 s:\n" + output[-3000:])
    assert proc.returncode == 0, output[-5000:]
    sums = [(out / f"params.rank{r}.sha256").read_text() for r in (0, 1)]
    assert sums[0] == sums[1]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 3 and ckpt["triplets_seen"] == 3 * 4 * 2 and ckpt["world_size"] == 2
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]  # rank 0 alone writes the log
    assert all(sum(r["samplers"].values()) == 8 for r in log)  # counts summed over both ranks
    # The ranks drew different triplets (the rank is part of the sampling seed).
    cache, sampler = FeatureCache(tmp_path / "cache"), make_sampler(ckpt["config"]["samplers"])
    b0, b1 = (sample_batch(sampler, cache, 4, seed=0, rank=r, step=0) for r in (0, 1))
    assert not np.array_equal(b0.energies, b1.energies)
