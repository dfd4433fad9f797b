"""Data-parallel training across processes and machines (torch DistributedDataParallel).

One process per GPU (or a few per CPU machine), started by ``torchrun``::

    torchrun --nproc_per_node 8 -m training train --config run.toml

Multi-node: run the same command on every node with a rendezvous point, e.g. two nodes::

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST0:29500 --rdzv_id run42 -m training train --config run.toml

Every process needs the feature cache at the configured path (a shared filesystem, or a copy
per node). When ``WORLD_SIZE`` is set, the process group is initialised from the environment
(``env://``): NCCL on GPU, gloo on CPU. Each rank draws its own triplets (the rank is part of
the sampling seed, ``training.samplers.batch_rng``), so the global batch is
``batch_size * world_size`` triplets; only rank 0 writes logs and checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from audioembed.errors import AudioembedError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank, the world, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


class DeviceError(AudioembedError, RuntimeError):
    """A configured device this machine does not have."""


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DeviceError("device = 'cuda' was configured but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device_preference: str = "auto") -> DistContext:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` set)."""
    if "WORLD_SIZE" not in os.environ:
        return DistContext(device=_pick_device(device_preference, 0))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = _pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return DistContext(rank, world, local_rank, local_world, device)


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DDP-wrap ``model`` when distributed; rank 0's initial weights are broadcast to all."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks (in place, on the process group's device); identity when alone."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True when ``flag`` is true on any rank, so all ranks stop at the same step (DDP would
    hang if one rank left the loop early)."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.destroy_process_group()
