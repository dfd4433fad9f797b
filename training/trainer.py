"""The training loop: triplet loss with optional semi-hard mining, Adam (paper sections 3, 4.2).

A run lives in one folder::

    checkpoint.pt      latest checkpoint (written atomically: temp file, then os.replace)
    train_log.jsonl    one JSON object per logged step
    config.json        the resolved configuration

Resume is exact: batches are a pure function of ``(seed, rank, step)``, and a checkpoint holds
model (with BatchNorm statistics), optimizer state and step, so ``--resume`` reproduces the
parameters of an uninterrupted run bit for bit (same device, threads and world size).

The run stops, after finishing the current step and writing a checkpoint, on SIGTERM/SIGINT,
when ``max_triplets`` (total, over all runs and ranks) or ``max_minutes`` (this invocation's
wall-clock time) is reached, or after ``steps`` steps.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import threading
import time
from contextlib import ExitStack, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from audioembed import frontend
from audioembed.model import AudioResNet
from audioembed.model_folder import sha256_file
from audioembed.errors import AudioembedError
from audioembed.outputs import atomic_write
from training import distributed
from training.checkpoint import (CHECKPOINT_NAME, RunState, git_commit, load_checkpoint,  # noqa: F401
                                 model_from_checkpoint, resume as resume_checkpoint, save_checkpoint)
from training.config import ConfigError, TrainConfig
from training.dev_tracking import DevQbE
from training.feature_cache import FeatureCache
from training.machine import bf16_enabled
from training.augment import Augment
from training.losses import NTXentLoss, TripletLoss
from training.negatives import NegativePool
from training.samplers import make_sampler, sample_batch
from training.schedule import Schedule

# CHECKPOINT_NAME, load_checkpoint and model_from_checkpoint live in training.checkpoint; they
# are imported here too because the experiments layer reaches them through the trainer.
LOG_NAME = "train_log.jsonl"


class RunExistsError(AudioembedError, FileExistsError):
    """A new run into a folder that already holds a checkpoint (``--resume`` continues it)."""


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``step`` is that step's batch on ``rank``.

    Opens the cache lazily so it pickles cheaply into DataLoader workers.
    """

    def __init__(self, cache_path: str, sampler_spec: dict, batch_size: int, seed: int, rank: int,
                 augment: dict | None = None):
        self.cache_path, self.sampler_spec = cache_path, sampler_spec
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self._cache = None
        self._sampler = make_sampler(sampler_spec)
        self._augment = Augment.from_dict(augment)
        self.sampler_names = sorted({s.name for s in self._sampler.samplers})

    def __getstate__(self):
        return dict(self.__dict__, _cache=None)

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            self._cache = FeatureCache(self.cache_path)
        return self._cache

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, step: int) -> dict:
        b = sample_batch(self._sampler, self.cache, self.batch_size, self.seed, self.rank, step, self._augment)
        which = np.array([self.sampler_names.index(name) for name in b.samplers], dtype=np.int64)
        counts = np.bincount(which, minlength=len(self.sampler_names)).astype(np.float32)
        return {"energies": torch.from_numpy(b.energies), "candidates": torch.from_numpy(b.candidates),
                "counts": torch.from_numpy(counts), "sampler_index": torch.from_numpy(which),
                "recordings": torch.from_numpy(b.recordings), "pool_ok": torch.from_numpy(b.pool_ok)}


def read_ahead(iterable: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead, so sampling the next
    batch overlaps the model's step (numpy and torch release the GIL in their kernels).

    Closing the generator (or its end) stops the thread and waits for it: a thread still inside
    a torch kernel when the interpreter exits aborts the process ("terminate called without an
    active exception"), so it must not outlive its consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def offer(item) -> bool:
        """Put ``item`` once there is room; False if the consumer stopped first."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterable:
                if not offer(item):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(exc)
            return
        offer(done)

    t = threading.Thread(target=work, daemon=True, name="batch-prefetch")
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()  # at most the batch being made: it is finished, then dropped


def _loader_batches(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    it = iter(loader)
    try:
        yield from it
    finally:
        del it  # its last reference: the iterator shuts its worker processes down


def batch_stream(dataset: StepBatches, start: int, stop: int, workers: int, pin: bool) -> Iterator[dict]:
    """Batches for steps ``start..stop-1`` in order; DataLoader workers, else a read-ahead thread.

    A generator: ``close()`` it when stopping early, so its thread or workers end before exit."""
    if workers > 0:
        return _loader_batches(torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
            pin_memory=pin, prefetch_factor=4, persistent_workers=False))
    return read_ahead((dataset[s] for s in range(start, stop)), depth=2)


def param_checksum(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in registration order.

    Buffers are left out: under DDP each rank's BatchNorm running statistics follow its own
    last batch until the next forward broadcasts rank 0's, which are the ones checkpointed.
    """
    h = hashlib.sha256()
    for k, v in distributed.unwrap(model).named_parameters():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _StopSignals:
    """Turns SIGTERM/SIGINT into a flag checked between steps; a second SIGINT aborts at once."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be installed from the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class RunResult:
    """How a run ended."""

    step: int
    triplets_seen: int
    reason: str
    checkpoint: Path | None


def train_step(model, loss_fn, optimizer, batch: dict, device: torch.device, autocast=None, pool=None):
    """One optimisation step on a batch from :class:`StepBatches`; returns ``(loss, stats)``.

    Triplet losses embed anchors, positives and negatives; ``NTXentLoss`` only the two views
    (anchor and positive), so a contrastive step costs two thirds of a triplet step.
    """
    contrastive = isinstance(loss_fn, NTXentLoss)
    x = batch["energies"].to(device, non_blocking=True)
    b = x.shape[1]
    views = 2 if contrastive else 3
    # The model sees log-mel: the samplers worked on linear energies (section 3.2).
    x = frontend.log_mel(x[:views]).reshape(views * b, 1, frontend.WINDOW_FRAMES, frontend.N_MELS)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast or nullcontext():
        emb = model(x)
    recs = batch.get("recordings")
    if contrastive:
        v1, v2 = emb.float().split(b)
        loss, stats = loss_fn(v1, v2, recs[:2 * b].to(device))
    else:
        a, p, n = emb.float().split(b)
        extra = {} if pool is None else {"pool": pool, "recs": recs, "pool_ok": batch["pool_ok"]}
        loss, stats = loss_fn(a, p, n, batch["candidates"].to(device, non_blocking=True), **extra)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, stats


def make_loss(config: TrainConfig) -> torch.nn.Module:
    """The configured objective (``[loss]``; see ``training.losses``)."""
    if config.contrastive:
        return NTXentLoss(config.loss["temperature"], config.loss["projection_dim"],
                          config.model.embedding_dim, gather=config.loss["gather"])
    return TripletLoss(margin=config.margin, mining=config.mining, kind=config.loss["kind"])


def make_pool(config: TrainConfig, device: torch.device) -> NegativePool | None:
    """The negatives beyond the batch (``[loss] gather``, ``xbm_size``), or None."""
    if config.contrastive or not (config.loss["gather"] or config.loss["xbm_size"]):
        return None
    return NegativePool(config.loss["gather"], config.loss["xbm_size"], config.loss["xbm_start_step"],
                        config.model.embedding_dim, device)


def adam_kernel() -> dict:
    """Adam's implementation flags: the fused kernel where torch has one for the CPU (2.4+) or
    on CUDA. On a ResNet-50 the default per-tensor loop costs ~7x the fused step's CPU time,
    about an eighth of a training step on 2 cores (``benchmarks/bench_train.py --real``)."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return {"fused": True, "foreach": False} if (major, minor) >= (2, 4) or torch.cuda.is_available() \
        else {"fused": None, "foreach": None}


def make_optimizer(params, lr: float) -> torch.optim.Adam:
    """The trainer's Adam, fused where available (:func:`adam_kernel`)."""
    return torch.optim.Adam(list(params), lr=lr, **adam_kernel())


def bare_step_seconds(config: TrainConfig, device: torch.device, warmup: int,
                      steps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of one training step as the trainer takes it (the recipe's
    network and warm start in channels-last, its loss, the trainer's Adam and bf16 setting) on
    one batch of the recipe's cache already in memory, without sampling, prefetch or the
    negative memory: the ceiling of the network on this machine. Uses the calling process's
    thread count."""
    torch.manual_seed(config.seed)
    model = AudioResNet(config.model).to(device, memory_format=torch.channels_last)
    if config.init:
        warm_start(model, config)
    model.train()
    loss_fn = make_loss(config).to(device)
    opt = make_optimizer(list(model.parameters()) + list(loss_fn.parameters()), config.lr)
    batch = StepBatches(config.cache, config.samplers, config.batch_size, config.seed, 0)[0]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16(config, device) \
        else nullcontext()
    wall, cpu = [], []
    for i in range(warmup + steps):
        t, c = time.perf_counter(), time.process_time()
        train_step(model, loss_fn, opt, batch, device, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def warm_start(model: AudioResNet, config: TrainConfig) -> dict:
    """Load ``config.init``'s weights into ``model`` (a fresh run); returns what was loaded."""
    spec = config.init
    if spec.endswith(".pt"):
        ckpt = load_checkpoint(spec)
        source_config, state, digest = ckpt["config"]["model"], ckpt["model"], sha256_file(spec)
    else:
        from audioembed import load_model

        loaded = load_model(spec)
        source_config, state = loaded.config.to_dict(), loaded.state_dict()
        digest = (getattr(loaded, "info", {}) or {}).get("sha256")
    if source_config != config.model.to_dict():
        raise ConfigError(f"[train] init {spec}: its model config {source_config} differs from the "
                          f"configured {config.model.to_dict()}")
    model.load_state_dict(state)
    return {"spec": spec, "sha256": digest}


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    """Whether a run autocasts to bf16 (its ``[runtime] bf16``, see
    :func:`training.machine.bf16_enabled`)."""
    return bf16_enabled(config.bf16, device)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint's step: a killed run may have logged steps that the
    resumed run is about to redo, and the log should show each step once."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # a line cut short by the kill: nothing after it is trustworthy
    if len(kept) != len(lines):
        atomic_write(path, lambda f: f.write("".join(kept).encode("utf-8")))


def _threads(config: TrainConfig, ctx: distributed.DistContext) -> int:
    if config.threads > 0:
        return config.threads
    return max(1, (os.cpu_count() or 1) // max(1, ctx.local_world_size))


def train(config: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
          max_triplets: int | None = None, max_minutes: float | None = None,
          write_checksums: bool = False, echo: Callable[[str], None] = print,
          progress: Callable[[int, dict | None], None] | None = None) -> RunResult:
    """Train (or resume training) the run in ``out_dir``; see the module docstring.

    ``progress`` (main process only) is called with the triplets seen before the first step
    (and ``None``), then after each logged step with its log record (a progress bar)."""
    out = Path(out_dir)
    ctx = distributed.setup(config.device)
    # The thread count is process-wide: give the caller theirs back (tests and notebooks call
    # train() in-process, and a changed count changes later float results).
    threads = torch.get_num_threads()
    try:
        return _train(config, out, ctx, resume, max_triplets, max_minutes, write_checksums, echo,
                      progress if ctx.is_main else None)
    finally:
        torch.set_num_threads(threads)
        distributed.teardown(ctx)


class StepLog:
    """Sums over the steps since the last log line, reduced over ranks into one JSONL record:
    loss, active fraction, d_ap, d_an, steps and pool size, then per sampler its triplet count,
    loss sum and active sum."""

    def __init__(self, names: list[str], per_step: int, device: torch.device):
        self.names, self.per_step = names, per_step
        self._acc = torch.zeros(6 + 3 * len(names), device=device, dtype=torch.float64)
        # Wall seconds of this rank outside the model's step, so that a log line shows where a
        # slow interval went: waiting for the next batch, writing checkpoints.
        self.overhead = {"data_wait_s": 0.0, "checkpoint_s": 0.0}
        self.restart_clock()

    def restart_clock(self) -> None:
        """Rates count from now (a dev measurement is not training time)."""
        self._t, self._steps = time.monotonic(), 0

    def add(self, loss: torch.Tensor, stats: dict, batch: dict) -> None:
        acc, n, device = self._acc, len(self.names), self._acc.device
        acc[:6] += torch.stack([loss.detach(), stats["active"], stats["d_ap"], stats["d_an"],
                                torch.ones((), device=device), stats["pool_size"]]).double()
        which = batch["sampler_index"].to(device)
        acc[6:6 + n] += batch["counts"].to(device).double()
        acc[6 + n:6 + 2 * n].index_add_(0, which, stats["per_triplet_loss"].double())
        acc[6 + 2 * n:].index_add_(0, which, stats["per_triplet_active"].double())
        self._steps += 1

    def record(self, ctx: distributed.DistContext, step: int, triplets_seen: int, lr: float,
               elapsed_s: float) -> dict:
        """The log line of the steps since the last one (every rank's); the sums restart."""
        distributed.all_reduce_sum(self._acc, ctx)
        now = time.monotonic()
        vals, n = self._acc.tolist(), len(self.names)
        k = vals[4]
        counts = vals[6:6 + n]
        record = {"step": step, "loss": vals[0] / k, "active": vals[1] / k,
                  "d_ap": vals[2] / k, "d_an": vals[3] / k,
                  "triplets_per_s": self.per_step * self._steps / max(now - self._t, 1e-9),
                  "lr": lr,
                  "samplers": {nm: int(c) for nm, c in zip(self.names, counts)},
                  # Per sampler: mean loss and active fraction of its triplets.
                  "per_sampler": {nm: {"loss": ls / c, "active": ac / c}
                                  for nm, c, ls, ac in zip(self.names, counts, vals[6 + n:6 + 2 * n],
                                                           vals[6 + 2 * n:]) if c},
                  # Mean number of negatives each anchor could use (1: its own only).
                  "pool_size": vals[5] / k,
                  "triplets_seen": triplets_seen,
                  "elapsed_s": round(elapsed_s, 3),
                  **{k: round(v, 3) for k, v in self.overhead.items()}}
        self._acc.zero_()
        self.overhead = dict.fromkeys(self.overhead, 0.0)
        self._t, self._steps = now, 0
        return record


def stop_reason(signal_name: str | None, triplets_seen: int, max_triplets: int | None,
                minutes: float, max_minutes: float | None) -> str | None:
    """Why this rank stops after the step just taken, or None to go on."""
    if signal_name:
        return f"signal {signal_name}"
    if max_triplets is not None and triplets_seen >= max_triplets:
        return "max_triplets"
    if max_minutes is not None and minutes >= max_minutes:
        return "max_minutes"
    return None


def _write_line(log_file, record: dict) -> None:
    if log_file is not None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()


def _train(config, out, ctx, resume, max_triplets, max_minutes, write_checksums, echo, progress) -> RunResult:
    started = time.monotonic()
    torch.set_num_threads(_threads(config, ctx))
    ckpt_path = out / CHECKPOINT_NAME
    # Every rank checks (and on resume reads) the run folder, so it must be on a filesystem all
    # nodes share; a rank that raised alone would leave the others waiting in DDP.
    if ckpt_path.exists() and not resume:
        raise RunExistsError(f"{ckpt_path} exists; pass --resume to continue that run, "
                             "or choose another --out")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    cuda = ctx.device.type == "cuda"
    torch.manual_seed(config.seed)  # identical initial weights on every rank (DDP also broadcasts)
    model = AudioResNet(config.model).to(ctx.device, memory_format=torch.channels_last)
    # The loss may hold parameters (the contrastive projection head): trained, checkpointed,
    # never exported.
    loss_fn = make_loss(config).to(ctx.device)
    optimizer = make_optimizer(list(model.parameters()) + list(loss_fn.parameters()), config.lr)
    pool = make_pool(config, ctx.device)
    state = RunState(plan=Schedule.from_dict(config.schedule))
    if resume:
        state = resume_checkpoint(ckpt_path, model=model, optimizer=optimizer, loss_fn=loss_fn,
                                  pool=pool, plan=state.plan, model_config=config.model.to_dict(),
                                  lr=config.lr, world_size=ctx.world_size, device=ctx.device)
        # A checkpoint's param groups carry the kernel flags it was saved with; use this one's.
        for group in optimizer.param_groups:
            group.update(adam_kernel())
    entry = {"from_step": state.step, "git_commit": git_commit(), "world_size": ctx.world_size}
    if not resume and config.init:
        entry["init"] = warm_start(model, config)
    state.code.append(entry)
    ddp_model = distributed.wrap(model, ctx)
    cache = FeatureCache(config.cache)
    dataset = StepBatches(config.cache, config.samplers, config.batch_size, config.seed, ctx.rank,
                          config.augment)
    workers = config.workers if config.workers >= 0 else (4 if cuda else 0)
    per_step = config.batch_size * ctx.world_size
    if ctx.is_main:
        config_text = json.dumps(config.to_dict(), indent=2) + "\n"
        atomic_write(out / "config.json", lambda f: f.write(config_text.encode("utf-8")))
    if ctx.is_main and resume:
        _truncate_log(out / LOG_NAME, state.step)
    log_file = open(out / LOG_NAME, "a", encoding="utf-8") if ctx.is_main else None
    dev = None
    if ctx.is_main and config.dev:
        dev = DevQbE(config.dev["dataset"], config.dev["data_root"], config.dev["max_windows"],
                     seed=config.seed, margin=config.margin, log=echo)
    data = {"manifest_sha256": cache.meta.get("manifest_sha256"), "manifest": cache.meta.get("manifest")}

    def elapsed_s() -> float:
        return state.elapsed_s + time.monotonic() - started

    def checkpoint() -> None:
        state.saved_step = state.step
        t0 = time.perf_counter()
        if ctx.is_main:
            save_checkpoint(ckpt_path, model=model, optimizer=optimizer, loss_fn=loss_fn, pool=pool,
                            state=state, elapsed_s=elapsed_s(), config=config.to_dict(),
                            world_size=ctx.world_size, data=data)
        step_log.overhead["checkpoint_s"] += time.perf_counter() - t0

    def measure_dev() -> None:
        # Only the main process measures; the others wait at the barrier, so every rank
        # resumes stepping together.
        state.measured_step = state.step
        if dev is not None:
            record = {"step": state.step, "triplets_seen": state.triplets_seen,
                      "dev": dev(model, ctx.device, autocast)}
            _write_line(log_file, record)
            d = record["dev"]
            echo(f"step {state.step}: dev QbE mAP {d['qbe_map']:.4f} ({d['dataset']})"
                 + (f", labelled-triplet loss {d['triplet_loss']:.4f}, active {d['active']:.3f}"
                    if "triplet_loss" in d else ""))
        distributed.barrier(ctx)

    step_log = StepLog(dataset.sampler_names, per_step, ctx.device)
    reason = "steps"
    ddp_model.train()
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if use_bf16(config, ctx.device) \
        else nullcontext()
    dev_every = config.dev["every"] if config.dev else 0
    with _StopSignals() as signals, ExitStack() as stack:
        if dev_every and state.step == 0:
            measure_dev()
        # Closed when the block ends (after the last checkpoint), so the read-ahead thread or
        # DataLoader workers end before the process does.
        batches = stack.enter_context(closing(batch_stream(dataset, state.step, config.steps,
                                                           workers, pin=cuda)))
        if progress is not None:
            progress(state.triplets_seen, None)
        if max_triplets is not None and state.triplets_seen >= max_triplets:
            reason = "max_triplets"  # already spent by the run being resumed
        while state.step < config.steps and reason == "steps":
            t0 = time.perf_counter()
            batch = next(batches)
            step_log.overhead["data_wait_s"] += time.perf_counter() - t0
            lr = config.lr * state.plan.factor(state.triplets_seen)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, stats = train_step(ddp_model, loss_fn, optimizer, batch, ctx.device, autocast, pool)
            if pool is not None:
                pool.update(loss_fn.last_pool, state.step)
            state.step += 1
            state.triplets_seen += per_step
            step_log.add(loss, stats, batch)
            if state.step % config.log_every == 0 or state.step == config.steps:
                record = step_log.record(ctx, state.step, state.triplets_seen,
                                         optimizer.param_groups[0]["lr"], elapsed_s())
                _write_line(log_file, record)
                if progress is not None:
                    progress(state.triplets_seen, record)
            stop = stop_reason(signals.received, state.triplets_seen, max_triplets,
                               (time.monotonic() - started) / 60.0, max_minutes)
            if distributed.any_rank(stop is not None, ctx):
                reason = stop or "another rank stopped"
                break
            if state.step % config.checkpoint_every == 0:
                checkpoint()
            if dev_every and state.step % dev_every == 0:
                measure_dev()
                step_log.restart_clock()
        if state.saved_step != state.step:
            checkpoint()
        if dev_every and state.measured_step != state.step:
            measure_dev()  # the state the run stops in, whatever stopped it
    if log_file is not None:
        log_file.close()
    if write_checksums:
        out.mkdir(parents=True, exist_ok=True)
        digest = param_checksum(model) + "\n"
        atomic_write(out / f"params.rank{ctx.rank}.sha256", lambda f: f.write(digest.encode("utf-8")))
    distributed.barrier(ctx)
    if ctx.is_main:
        echo(f"stopped at step {state.step} ({state.triplets_seen} triplets): {reason}; "
             f"checkpoint {ckpt_path}")
    return RunResult(state.step, state.triplets_seen, reason, ckpt_path if ctx.is_main else None)
