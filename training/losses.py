"""Triplet loss (Jansen et al., ICASSP 2018, section 3.1, eq. 1) and semi-hard negative mining
(section 4.2, after Schroff et al., "FaceNet", CVPR 2015)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_MARGIN = 0.1


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``(N, D) x (M, D) -> (N, M)``, clamped at 0."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ y.T + (y * y).sum(1).unsqueeze(0)
    return d.clamp_min(0.0)


@torch.no_grad()
def select_semi_hard(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                     candidates: torch.Tensor, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """Index, into ``cat([anchor, positive, negative])``, of the negative each triplet trains on.

    For triplet ``i`` with ``dp = d(a_i, p_i)`` and candidate set ``C_i`` (row ``i`` of the bool
    ``(B, 3B)`` mask ``candidates``, which always holds the own negative ``2B + i``):

    1. semi-hard: among ``c`` in ``C_i`` with ``dp < d(a_i, c) < dp + margin``, the one with the
       smallest ``d(a_i, c)``;
    2. else the hardest candidate farther than the positive: smallest ``d(a_i, c)`` with
       ``d(a_i, c) > dp`` (its loss is zero, but it is the most informative easy one);
    3. else (every candidate is at least as close as the positive) the own negative.

    Ties go to the lowest index. ``d`` is the squared Euclidean distance.
    """
    b = anchor.shape[0]
    pool = torch.cat([anchor, positive, negative])
    d = squared_distances(anchor, pool)  # (B, 3B)
    dp = (anchor - positive).square().sum(1, keepdim=True)
    inf = torch.tensor(float("inf"), device=d.device, dtype=d.dtype)
    farther = candidates & (d > dp)
    semi = farther & (d < dp + margin)
    pick_semi = torch.where(semi, d, inf).argmin(1)
    pick_far = torch.where(farther, d, inf).argmin(1)
    own = torch.arange(2 * b, 3 * b, device=d.device)
    return torch.where(semi.any(1), pick_semi, torch.where(farther.any(1), pick_far, own))


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = DEFAULT_MARGIN) -> tuple[torch.Tensor, dict]:
    """Mean of ``max(0, ||a - p||^2 - ||a - n||^2 + margin)`` over the batch (eq. 1).

    Returns the loss and detached statistics: ``active`` (fraction of triplets with non-zero
    loss), ``d_ap`` and ``d_an`` (mean squared distances).
    """
    d_ap = (anchor - positive).square().sum(1)
    d_an = (anchor - negative).square().sum(1)
    losses = F.relu(d_ap - d_an + margin)
    stats = {"active": (losses > 0).float().mean().detach(), "d_ap": d_ap.mean().detach(),
             "d_an": d_an.mean().detach()}
    return losses.mean(), stats


class TripletLoss(nn.Module):
    """Triplet loss with optional in-batch semi-hard negative mining.

    Given anchor, positive and negative embeddings, L2-normalises them and minimises the
    squared Euclidean distance between anchor and positive while pushing the negative at least
    ``margin`` farther away::

        loss = mean_i max(0, ||a_i - p_i||^2 - ||a_i - n_i||^2 + margin)

    Args:
        margin: the hinge margin delta (paper: 0.1 on unit-norm 128-d embeddings).
        mining: replace each minable triplet's negative by the one :func:`select_semi_hard`
            picks among the batch's allowed candidates.

    Inputs to ``forward``: ``anchor``, ``positive``, ``negative`` ``(B, D)``; ``candidates``
    bool ``(B, 3B)`` (see ``training.samplers.negative_candidates``) when mining.
    Returns ``(loss, stats)``.

    References:
        Jansen et al., "Unsupervised Learning of Semantic Audio Representations", ICASSP 2018,
        sections 3.1 (eq. 1) and 4.2. Schroff et al., "FaceNet", CVPR 2015 (semi-hard mining).
    """

    def __init__(self, margin: float = DEFAULT_MARGIN, mining: bool = False):
        super().__init__()
        self.margin = float(margin)
        self.mining = bool(mining)

    def forward(self, anchor, positive, negative, candidates: torch.Tensor | None = None):
        anchor, positive, negative = (F.normalize(t.float(), dim=1) for t in (anchor, positive, negative))
        if self.mining:
            if candidates is None:
                raise ValueError("mining needs the candidates mask of the batch")
            idx = select_semi_hard(anchor, positive, negative, candidates.to(anchor.device), self.margin)
            negative = torch.cat([anchor, positive, negative])[idx]
        return triplet_loss(anchor, positive, negative, self.margin)
