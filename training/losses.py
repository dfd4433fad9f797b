"""Triplet loss (Jansen et al., ICASSP 2018, section 3.1, eq. 1) and semi-hard negative mining
(section 4.2, after Schroff et al., "FaceNet", CVPR 2015)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.negatives import gather_ranks, multi_process, shares_recording

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
    own = torch.arange(2 * b, 3 * b, device=anchor.device)
    return select_semi_hard_pool(anchor, positive, torch.cat([anchor, positive, negative]), candidates,
                                 own, margin)


@torch.no_grad()
def select_semi_hard_pool(anchor: torch.Tensor, positive: torch.Tensor, pool: torch.Tensor,
                          allowed: torch.Tensor, own: torch.Tensor, margin: float = DEFAULT_MARGIN
                          ) -> torch.Tensor:
    """:func:`select_semi_hard` over any pool: ``pool`` ``(M, D)``, ``allowed`` bool ``(B, M)``
    (holding each own negative), ``own`` ``(B,)`` the own negatives' rows; returns rows of ``pool``."""
    d = squared_distances(anchor, pool)
    dp = (anchor - positive).square().sum(1, keepdim=True)
    inf = torch.tensor(float("inf"), device=d.device, dtype=d.dtype)
    farther = allowed & (d > dp)
    semi = farther & (d < dp + margin)
    pick_semi = torch.where(semi, d, inf).argmin(1)
    pick_far = torch.where(farther, d, inf).argmin(1)
    return torch.where(semi.any(1), pick_semi, torch.where(farther.any(1), pick_far, own))


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = DEFAULT_MARGIN, soft: bool = False) -> tuple[torch.Tensor, dict]:
    """Mean of ``max(0, ||a - p||^2 - ||a - n||^2 + margin)`` over the batch (eq. 1), or with
    ``soft`` of ``softplus(||a - p||^2 - ||a - n||^2)`` (Hermans et al. 2017).

    Returns the loss and detached statistics: ``active`` (fraction of triplets within the margin,
    i.e. with a non-zero hinge), ``d_ap`` and ``d_an`` (mean squared distances), and the
    per-triplet loss and activity.
    """
    d_ap = (anchor - positive).square().sum(1)
    d_an = (anchor - negative).square().sum(1)
    hinge = F.relu(d_ap - d_an + margin)
    losses = F.softplus(d_ap - d_an) if soft else hinge
    active = (hinge > 0).float().detach()
    stats = {"active": active.mean(), "d_ap": d_ap.mean().detach(), "d_an": d_an.mean().detach(),
             "per_triplet_loss": losses.detach(), "per_triplet_active": active}
    return losses.mean(), stats


LOSS_KINDS = ("hinge", "batch-all", "soft-margin")


def batch_all_loss(anchor: torch.Tensor, positive: torch.Tensor, pool: torch.Tensor, allowed: torch.Tensor,
                   margin: float = DEFAULT_MARGIN) -> tuple[torch.Tensor, dict]:
    """Mean over anchors of the mean hinge over every allowed negative of the anchor::

        L_i = 1/|C_i| * sum_{j in C_i} max(0, ||a_i - p_i||^2 - ||a_i - x_j||^2 + margin)

    ``active`` is the fraction of (anchor, negative) pairs with a non-zero hinge; ``d_an`` the
    mean distance to the allowed negatives.
    """
    d_ap = (anchor - positive).square().sum(1)
    d = squared_distances(anchor, pool)
    hinge = F.relu(d_ap[:, None] - d + margin) * allowed
    count = allowed.sum(1).clamp_min(1)
    per = hinge.sum(1) / count
    active = ((hinge > 0).sum(1) / count).detach()
    stats = {"active": active.mean(), "d_ap": d_ap.mean().detach(),
             "d_an": ((d * allowed).sum(1) / count).mean().detach(),
             "per_triplet_loss": per.detach(), "per_triplet_active": active}
    return per.mean(), stats


class TripletLoss(nn.Module):
    """Triplet loss with optional semi-hard negative mining, and multi-negative variants.

    Given anchor, positive and negative embeddings, L2-normalises them and minimises the
    squared Euclidean distance between anchor and positive while pushing negatives at least
    ``margin`` farther away. With ``d_ap = ||a_i - p_i||^2`` and ``d_an = ||a_i - n_i||^2``:

    - ``kind="hinge"`` (the paper's eq. 1): ``mean_i max(0, d_ap - d_an + margin)``;
    - ``kind="soft-margin"``: ``mean_i softplus(d_ap - d_an)``, the hinge replaced by its smooth
      version, so no triplet stops giving gradient (Hermans et al. 2017); ``margin`` then only
      guides mining and the ``active`` statistic;
    - ``kind="batch-all"``: the mean hinge over *every* allowed negative of each anchor (see
      :func:`batch_all_loss`), instead of one negative per anchor.

    The negative of ``hinge`` and ``soft-margin`` is the triplet's own, or with ``mining`` the
    semi-hard one (:func:`select_semi_hard_pool`) among the allowed candidates. Candidates are
    the batch's windows the sampler allows (``candidates``), and with a
    :class:`training.negatives.NegativePool` also other ranks' windows and a cross-batch memory
    (never a window sharing a recording with the anchor).

    Args:
        margin: the hinge margin delta (paper: 0.1 on unit-norm 128-d embeddings).
        mining: pick the semi-hard negative (``hinge`` and ``soft-margin``).
        kind: ``"hinge"`` (default), ``"soft-margin"`` or ``"batch-all"``.

    Inputs to ``forward``: ``anchor``, ``positive``, ``negative`` ``(B, D)``; ``candidates`` bool
    ``(B, 3B)`` (``training.samplers.negative_candidates``) when mining or with ``batch-all``;
    optionally ``pool`` (a ``NegativePool``), ``recs`` ``(3B, 2)`` recording ids and ``pool_ok``
    ``(B,)``. Returns ``(loss, stats)``: ``active``, ``d_ap``, ``d_an``, per-triplet loss and
    activity, and ``pool_size`` (mean allowed negatives per anchor).

    Example::

        >>> loss_fn = TripletLoss(margin=0.1, kind="soft-margin")
        >>> a, p, n = torch.randn(3, 4, 128).unbind()
        >>> loss, stats = loss_fn(a, p, n)

    References:
        Jansen et al., "Unsupervised Learning of Semantic Audio Representations", ICASSP 2018,
        sections 3.1 (eq. 1) and 4.2. Schroff et al., "FaceNet", CVPR 2015 (semi-hard mining).
        Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv 1703.07737, 2017 (soft margin, batch-all). Wang et al., "Cross-Batch Memory for
        Embedding Learning", CVPR 2020.
    """

    def __init__(self, margin: float = DEFAULT_MARGIN, mining: bool = False, kind: str = "hinge"):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {list(LOSS_KINDS)}, got {kind!r}")
        self.margin = float(margin)
        self.mining = bool(mining)
        self.kind = kind
        self.last_pool = None  # the step's windows for NegativePool.update

    def forward(self, anchor, positive, negative, candidates: torch.Tensor | None = None, *,
                pool=None, recs: torch.Tensor | None = None, pool_ok: torch.Tensor | None = None):
        anchor, positive, negative = (F.normalize(t.float(), dim=1) for t in (anchor, positive, negative))
        b = anchor.shape[0]
        needs_pool = self.mining or self.kind == "batch-all"
        if needs_pool and candidates is None:
            raise ValueError(f"{'mining' if self.mining else self.kind} needs the candidates mask of the batch")
        if pool is not None:
            windows, allowed, own, self.last_pool = pool.build(anchor, positive, negative, recs.to(anchor.device),
                                                               candidates.to(anchor.device), pool_ok.to(anchor.device))
        elif needs_pool:
            windows = torch.cat([positive, negative])
            allowed = candidates.to(anchor.device)[:, b:]
            own = torch.arange(b, 2 * b, device=anchor.device)
        if self.kind == "batch-all":
            loss, stats = batch_all_loss(anchor, positive, windows, allowed, self.margin)
        else:
            if self.mining:
                negative = windows[select_semi_hard_pool(anchor, positive, windows, allowed, own, self.margin)]
            loss, stats = triplet_loss(anchor, positive, negative, self.margin, soft=self.kind == "soft-margin")
        stats["pool_size"] = allowed.sum(1).float().mean().detach() if needs_pool else \
            torch.ones((), device=anchor.device)
        return loss, stats


class NTXentLoss(nn.Module):
    """NT-Xent (InfoNCE) over two views of each example: the contrastive alternative to the
    triplet loss, with the same data, samplers and negative rules.

    With ``z`` the L2-normalised (optionally projected) embeddings of the ``2B`` views, where
    views ``i`` and ``i + B`` are the two views of example ``i`` (the sampler's anchor and
    positive)::

        l_i = -log( exp(z_i . z_pos(i) / t) / sum_{j in N_i + pos(i)} exp(z_i . z_j / t) )
        loss = mean_i l_i

    ``N_i`` holds every other view of the batch (and, with ``gather``, of every rank, as
    constants) except those sharing a recording with view ``i``: a neighbour of the same
    recording is not a negative here either.

    Args:
        temperature: ``t`` (SimCLR: 0.1 to 0.5; COALA and Sep-SSL use 0.1-0.2).
        projection_dim: 0 for none, else a head ``Linear(D, 512) -> ReLU -> Linear(512,
            projection_dim)`` between the embedding and the loss. It lives in the loss module,
            so the exported model (the embedding network) never contains it.
        embedding_dim: ``D``, the embedding size (the head's input).
        gather: add other ranks' views as negatives (under DDP).

    Inputs to ``forward``: ``view1``, ``view2`` ``(B, D)`` and ``recs`` ``(2B, R)``, the recording
    ids of ``[view1, view2]`` (-1: none). Returns ``(loss, stats)``: ``active`` (fraction of
    views whose partner is not the most similar view), ``d_ap`` (mean squared distance between
    the two views' ``z``), ``d_an`` (from ``z_i`` to its allowed negatives), ``pool_size``, and the
    per-example loss and activity.

    Example::

        >>> loss_fn = NTXentLoss(temperature=0.1, projection_dim=128)
        >>> v1, v2 = torch.randn(2, 8, 128).unbind()
        >>> loss, stats = loss_fn(v1, v2, torch.arange(16).reshape(16, 1))

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
        (SimCLR), ICML 2020. Oord et al., "Representation Learning with Contrastive Predictive
        Coding", 2018 (InfoNCE). Favory et al., "COALA", 2020. Fonseca, Jansen et al.,
        "Unsupervised Contrastive Learning of Sound Event Representations", ICASSP 2021.
    """

    def __init__(self, temperature: float = 0.1, projection_dim: int = 0, embedding_dim: int = 128,
                 gather: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.head = nn.Sequential(nn.Linear(embedding_dim, 512), nn.ReLU(), nn.Linear(512, projection_dim)) \
            if projection_dim else nn.Identity()
        self.gather = gather

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, recs: torch.Tensor):
        e1, e2 = F.normalize(view1.float(), dim=1), F.normalize(view2.float(), dim=1)
        b = e1.shape[0]
        z = F.normalize(self.head(torch.cat([e1, e2])), dim=1)
        recs = recs.to(z.device)
        cols, col_recs = [z], [recs]
        if self.gather and multi_process():
            cols.append(gather_ranks(z.detach())[1])
            col_recs.append(gather_ranks(recs)[1])
        zc, rc = torch.cat(cols), torch.cat(col_recs)
        logits = z @ zc.T / self.temperature
        n = 2 * b
        idx = torch.arange(n, device=z.device)
        pos = (idx + b) % n
        allowed = ~shares_recording(recs, rc)
        allowed[idx, idx] = False
        allowed[idx, pos] = True
        logits = logits.masked_fill(~allowed, float("-inf"))
        per_view = F.cross_entropy(logits, pos, reduction="none")
        with torch.no_grad():
            wrong = (logits.argmax(1) != pos).float()
            neg = allowed.clone()
            neg[idx, pos] = False
            d = 2.0 - 2.0 * (z @ zc.T)
            count = neg.sum(1).clamp_min(1)
            stats = {"active": wrong.mean(), "d_ap": (z[:b] - z[b:]).square().sum(1).mean(),
                     "d_an": ((d * neg).sum(1) / count).mean(), "pool_size": neg.sum(1).float().mean(),
                     "per_triplet_loss": (per_view[:b] + per_view[b:]).detach() / 2,
                     "per_triplet_active": (wrong[:b] + wrong[b:]) / 2}
        return per_view.mean(), stats
