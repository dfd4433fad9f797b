"""Two-process DistributedDataParallel training on CPU (gloo), launched the way users launch it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed import frontend
from audioembed.model import AudioResNet, ModelConfig
from training import distributed
from training.feature_cache import FeatureCache, build_cache
from training.losses import TripletLoss
from training.samplers import make_sampler, sample_batch
from training.checkpoint import load_checkpoint
from training.trainer import LOG_NAME, train_step

pytestmark = pytest.mark.slow  # two-process training (torchrun, spawned ranks)

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


# --- DDP gradient averaging, step by step -------------------------------------------------------

_DDP_MODEL = ModelConfig(layers=(1, 1, 1, 1), base_width=8)
_DDP_LR = 1.0  # plain SGD at rate 1: the step moves each parameter by exactly its gradient


def _ddp_batches(half: int = 4) -> dict:
    """Fixed triplets: ``union`` (2 * half) and each rank's half of it; mining is off, so the
    candidates are the own negatives."""
    energies = torch.from_numpy(np.random.default_rng(0).uniform(
        0.0, 2.0, size=(3, 2 * half, frontend.WINDOW_FRAMES, frontend.N_MELS)).astype(np.float32))

    def batch(e):
        b = e.shape[1]
        own = torch.zeros(b, 3 * b, dtype=torch.bool)
        own[torch.arange(b), 2 * b + torch.arange(b)] = True
        return {"energies": e.contiguous(), "candidates": own}

    return {"union": batch(energies), 0: batch(energies[:, :half]), 1: batch(energies[:, half:])}


def _ddp_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # Eval mode: BatchNorm then normalises each window on its own (running statistics). In
    # training mode each rank would normalise by its own half's statistics (DDP does not sync
    # them), so no 1-process step could equal the 2-rank one whatever DDP did to gradients.
    return AudioResNet(_DDP_MODEL).eval()


def _one_step(model: torch.nn.Module, batch: dict) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=_DDP_LR)
    train_step(model, TripletLoss(mining=False), opt, batch, torch.device("cpu"))
    net = distributed.unwrap(model)
    return {k: (p.detach().clone(), p.grad.detach().clone()) for k, p in net.named_parameters()}


def _ddp_rank(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=2)
    try:
        ctx = distributed.DistContext(rank=rank, world_size=2, local_world_size=2)
        model = distributed.wrap(_ddp_model(), ctx)
        torch.save(_one_step(model, _ddp_batches()[rank]), Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_matches_single_process_step_on_the_union_batch(tmp_path, one_thread):
    ctx = torch.multiprocessing.spawn(_ddp_rank, args=(_free_port(), str(tmp_path)), nprocs=2,
                                      join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-rank gloo step did not finish in 120 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    batches = _ddp_batches()
    union = _one_step(_ddp_model(), batches["union"])
    half = _one_step(_ddp_model(), batches[0])
    far_from_half = 0.0
    for k, (w, g) in union.items():
        for r in ranks:
            # The mean of the halves' mean losses is the union's mean loss: equal gradients.
            torch.testing.assert_close(r[k][1], g, atol=1e-6, rtol=0, msg=f"gradient of {k}")
            torch.testing.assert_close(r[k][0], w, atol=1e-6, rtol=0, msg=f"weight {k}")
        far_from_half = max(far_from_half, (ranks[0][k][1] - half[k][1]).abs().max().item())
    # Rank 0's gradient alone would have been a different step.
    assert far_from_half > 1e-3
