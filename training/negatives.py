"""The negative pool of a step: this batch's windows, other ranks' windows and a cross-batch
memory, with the rule that no window is a negative for an anchor from the same recording.

Each window carries the ids of the recordings whose audio it holds (``REC_SLOTS`` of them, -1
for unused slots; a mixture holds two). The pool of triplet ``i`` is:

1. this rank's positives and negatives (``2B``), allowed as ``candidates[:, B:]`` says (the
   sampler's rule, which also handles labels for explicit-label triplets);
2. with ``gather``, the positives and negatives of every other rank (``2B (W - 1)``), as
   constants: gradients flow through this rank's windows only, and DDP averages them;
3. with ``xbm_size > 0``, a first-in-first-out memory of the last ``xbm_size`` windows of all
   ranks, from earlier steps (Wang et al., "Cross-Batch Memory for Embedding Learning",
   CVPR 2020). Its embeddings were made by slightly older weights; that drift is small once
   training has settled, so the memory fills only from ``xbm_start_step`` on.

Windows of 2 and 3 may be negatives only for triplets that may be mined (``pool_ok``: not
example mixing, whose negative is inside its positive, and not explicit-label triplets, whose
negatives must also differ in label, which only the sampler knows), and never for an anchor
sharing a recording with them.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from audioembed.errors import AudioembedError

REC_SLOTS = 3  # anchor audio, a mixed-in negative, an augmentation background


def shares_recording(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` bool: row ``i`` of ``a`` and row ``j`` of ``b`` (recording ids, ``(N, R)`` and
    ``(M, R)``, -1 unused) have a recording in common."""
    same = a[:, None, :, None] == b[None, :, None, :]
    valid = (a >= 0)[:, None, :, None]
    return (same & valid).flatten(2).any(2)


def multi_process() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_ranks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(every rank's x, the other ranks' x)``, each concatenated in rank order (same shape on
    all ranks); no gradient flows through."""
    rows = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, x.contiguous())
    rank = dist.get_rank()
    return torch.cat(rows), torch.cat([r for i, r in enumerate(rows) if i != rank])


class CrossBatchMemory:
    """A ring buffer of ``size`` embeddings with their recording ids (``-1``: empty slot)."""

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu"):
        self.size = int(size)
        self.emb = torch.zeros(self.size, dim, device=device)
        self.recs = torch.full((self.size, REC_SLOTS), -1, dtype=torch.long, device=device)
        self.filled = 0
        self.ptr = 0

    def enqueue(self, emb: torch.Tensor, recs: torch.Tensor) -> None:
        """Add rows, overwriting the oldest once full (the newest ``size`` rows win)."""
        emb, recs = emb.detach()[-self.size:], recs[-self.size:]
        n = len(emb)
        idx = (self.ptr + torch.arange(n, device=self.emb.device)) % self.size
        self.emb[idx] = emb.to(self.emb.dtype)
        self.recs[idx] = recs.to(self.recs.device)
        self.ptr = int((self.ptr + n) % self.size)
        self.filled = min(self.size, self.filled + n)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.emb[:self.filled], self.recs[:self.filled]

    def state_dict(self) -> dict:
        return {"emb": self.emb.cpu(), "recs": self.recs.cpu(), "filled": self.filled, "ptr": self.ptr}

    def load_state_dict(self, state: dict) -> None:
        if state["emb"].shape != self.emb.shape:
            raise AudioembedError(f"cross-batch memory of shape {tuple(state['emb'].shape)} in the "
                                  f"checkpoint, {tuple(self.emb.shape)} configured")
        self.emb.copy_(state["emb"])
        self.recs.copy_(state["recs"])
        self.filled, self.ptr = int(state["filled"]), int(state["ptr"])


class NegativePool:
    """Builds each step's pool (see the module docstring) and feeds the memory afterwards."""

    def __init__(self, gather: bool = False, xbm_size: int = 0, xbm_start_step: int = 0, dim: int = 128,
                 device: torch.device | str = "cpu"):
        self.gather = bool(gather) and multi_process()
        self.memory = CrossBatchMemory(xbm_size, dim, device) if xbm_size > 0 else None
        self.xbm_start_step = int(xbm_start_step)

    def build(self, anchor, positive, negative, recs, candidates, pool_ok):
        """``(pool (M, D), allowed (B, M) bool, own (B,) index of each own negative, mine)``.

        ``recs``: ``(3B, REC_SLOTS)`` recording ids of ``[anchors, positives, negatives]``;
        ``candidates``: the sampler's ``(B, 3B)`` mask; ``pool_ok``: ``(B,)`` bool.
        ``mine`` holds the detached windows this step adds to the memory (for :meth:`update`).
        """
        b = anchor.shape[0]
        local = torch.cat([positive, negative])
        local_recs = recs[b:]
        parts, allowed = [local], [candidates[:, b:]]
        other_emb, other_recs = [], []
        mine = (local.detach(), local_recs)
        if self.gather:
            all_emb, others = gather_ranks(local.detach())
            all_recs, others_recs = gather_ranks(local_recs)
            other_emb, other_recs = [others], [others_recs]
            mine = (all_emb, all_recs)
        if self.memory is not None and self.memory.filled:
            m_emb, m_recs = self.memory.contents()
            other_emb.append(m_emb)
            other_recs.append(m_recs)
        if other_emb:
            extra, extra_recs = torch.cat(other_emb).to(local.dtype), torch.cat(other_recs)
            parts.append(extra)
            allowed.append(pool_ok[:, None] & ~shares_recording(recs[:b], extra_recs))
        own = torch.arange(b, 2 * b, device=anchor.device)
        return torch.cat(parts), torch.cat(allowed, dim=1), own, mine

    def update(self, mine, step: int) -> None:
        """After the step: remember this step's windows (of all ranks) in the memory."""
        if self.memory is not None and step >= self.xbm_start_step:
            self.memory.enqueue(*mine)
