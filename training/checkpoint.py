"""Training checkpoints: save, load (format version checked), resume, and the model inside.

A checkpoint (``checkpoint.pt`` in the run folder) is a ``torch.save`` dict of tensors and
plain values, read with ``weights_only=True``::

    format          CHECKPOINT_FORMAT
    model           the network's state dict (with BatchNorm statistics)
    optimizer       Adam's state dict
    loss_state      the loss's parameters (the contrastive projection head; never exported)
    xbm             the cross-batch memory (training.negatives), or None
    step, triplets_seen, elapsed_s
    config          TrainConfig.to_dict()
    world_size      processes that trained it
    data            manifest and its sha256 (from the feature cache)
    code            one entry per start or resume: from_step, git_commit, world_size[, init]
    schedule        the learning-rate plan the run started with

It is written atomically (temp file, fsync, rename), so a kill never leaves a partial one.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from audioembed.errors import AudioembedError
from audioembed.model import AudioResNet, ModelConfig
from audioembed.outputs import atomic_write
from training.schedule import Schedule

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
_EXPORT_FIELDS = {"model", "step", "triplets_seen", "config"}


class MissingCheckpointError(AudioembedError, FileNotFoundError):
    """``--resume`` without a checkpoint in the run folder."""


class CheckpointError(AudioembedError, ValueError):
    """A file that is not a training checkpoint this code reads, or one that does not fit the
    configured run."""


@dataclass
class RunState:
    """Where a run stands: counters that a checkpoint keeps and a resume restores, and which
    steps this invocation has checkpointed and measured."""

    plan: Schedule
    step: int = 0
    triplets_seen: int = 0
    elapsed_s: float = 0.0  # training time of earlier invocations
    code: list[dict] = field(default_factory=list)  # which source tree trained which steps
    saved_step: int | None = None
    measured_step: int | None = None


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint as a dict, its format version checked."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # truncated, or not torch.save
        raise CheckpointError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (a {type(ckpt).__name__})")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt.get('format')!r} is not "
                              f"{CHECKPOINT_FORMAT}, the one this code reads")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint as a dict (weights on CPU), checked for the fields export needs."""
    ckpt = read_checkpoint(path)
    missing = _EXPORT_FIELDS - set(ckpt)
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (missing {sorted(missing)})")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> AudioResNet:
    model = AudioResNet(ModelConfig.from_dict(ckpt["config"]["model"]))
    model.load_state_dict(ckpt["model"])
    return model


def save_checkpoint(path: Path, *, model, optimizer, loss_fn, pool, state: RunState, elapsed_s: float,
                    config: dict, world_size: int, data: dict) -> Path:
    """Write the run's checkpoint atomically (and durably: a resume relies on it)."""
    obj = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
           "optimizer": optimizer.state_dict(), "step": state.step,
           "triplets_seen": state.triplets_seen, "elapsed_s": elapsed_s, "config": config,
           "world_size": world_size, "data": data, "code": state.code,
           "schedule": state.plan.to_dict(), "loss_state": loss_fn.state_dict(),
           "xbm": pool.memory.state_dict() if pool is not None and pool.memory else None}
    atomic_write(path, lambda f: torch.save(obj, f), fsync=True)
    return path


def resume(path: Path, *, model, optimizer, loss_fn, pool, plan: Schedule, model_config: dict,
           lr: float, world_size: int, device) -> RunState:
    """Restore model, optimizer, loss, memory and counters from ``path``; the run's state.

    The schedule is the one the run started with (a resume with another budget must not
    reshape the curve); the learning rate is the configured one, so a run can be continued (or
    branched for tuning) at another rate. The log records the rate of every step.
    """
    if not path.exists():
        raise MissingCheckpointError(f"--resume: no {path}")
    ckpt = read_checkpoint(path, map_location=device)
    if ckpt["config"]["model"] != model_config:
        raise CheckpointError(f"{path}: the checkpoint's model config {ckpt['config']['model']} "
                              f"differs from the configured {model_config}")
    if ckpt.get("world_size", 1) != world_size:
        warnings.warn(f"resuming a {ckpt.get('world_size')}-process run with {world_size} "
                      "processes: the data order will differ from an uninterrupted run")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if "loss_state" in ckpt:
        loss_fn.load_state_dict(ckpt["loss_state"])
    if pool is not None and pool.memory is not None and ckpt.get("xbm") is not None:
        pool.memory.load_state_dict(ckpt["xbm"])
    if "schedule" in ckpt:
        started_plan = Schedule.from_dict(ckpt["schedule"])
        if started_plan != plan:
            warnings.warn(f"the run started with schedule {started_plan.to_dict()}; it keeps "
                          f"that plan, not the configured {plan.to_dict()}")
        plan = started_plan
    for group in optimizer.param_groups:
        group["lr"] = lr
    return RunState(plan=plan, step=ckpt["step"], triplets_seen=ckpt["triplets_seen"],
                    elapsed_s=ckpt["elapsed_s"], code=list(ckpt.get("code", [])))


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of this source tree (``+dirty`` with uncommitted changes to
    tracked files), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
