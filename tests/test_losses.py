"""Triplet loss (eq. 1) against hand computation, and semi-hard mining on hand-built batches;
the v0.3 objectives and their negatives against hand-computed cases: soft-margin and batch-all
triplet losses, NT-Xent, same-recording exclusion, the cross-batch memory, and negatives gathered
across two gloo processes."""
from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.losses import (NTXentLoss, TripletLoss, batch_all_loss, select_semi_hard, squared_distances,
                             triplet_loss)
from training.negatives import CrossBatchMemory, NegativePool, shares_recording


def unit(*angles_deg):
    """Unit vectors in the plane at the given angles (degrees)."""
    return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles_deg])


def chord2(deg):
    """Squared distance between unit vectors ``deg`` degrees apart: 2 - 2 cos."""
    return 2 - 2 * math.cos(math.radians(deg))


def test_loss_matches_hand_computation():
    a, p, n = unit(0, 0), unit(20, 10), unit(25, 90)
    loss, stats = triplet_loss(a, p, n, margin=0.1)
    l0 = max(0.0, chord2(20) - chord2(25) + 0.1)  # 0.1206 - 0.1874 + 0.1 = 0.0332
    l1 = max(0.0, chord2(10) - chord2(90) + 0.1)  # clearly satisfied: 0
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert stats["active"].item() == 0.5
    assert stats["d_ap"].item() == pytest.approx((chord2(20) + chord2(10)) / 2, rel=1e-6)
    assert stats["d_an"].item() == pytest.approx((chord2(25) + chord2(90)) / 2, rel=1e-6)


def test_module_normalises_and_backpropagates():
    a = torch.tensor([[3.0, 0.0]], requires_grad=True)
    p, n = torch.tensor([[0.0, 2.0]]), torch.tensor([[5.0, 0.1]])
    loss, _ = TripletLoss(margin=0.1)(a, p, n)
    assert loss.item() == pytest.approx(chord2(90) - chord2(math.degrees(math.atan2(0.1, 5))) + 0.1, rel=1e-5)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_squared_distances():
    x, y = torch.randn(4, 3), torch.randn(5, 3)
    ref = ((x[:, None] - y[None]) ** 2).sum(-1)
    torch.testing.assert_close(squared_distances(x, y), ref, rtol=1e-5, atol=1e-5)


def _batch():
    """Three triplets; anchor 0 at 0 deg with its positive at 20 deg (d_ap = 0.1206).

    Candidates for anchor 0 (its row of the mask): own negative at 120 deg (easy, d 3.0),
    positive 1 at 24 deg (semi-hard, d 0.1729), negative 1 at 22 deg (semi-hard, d 0.1459, the
    closest), and positive 2 at 10 deg (d 0.0304, harder than the positive: not semi-hard).
    """
    a = unit(0, 200, 300)
    p = unit(20, 24, 10)
    n = unit(120, 22, 250)
    return a, p, n


def test_semi_hard_picks_the_closest_negative_in_the_margin_band():
    a, p, n = _batch()
    b = 3
    mask = torch.zeros(b, 3 * b, dtype=torch.bool)
    mask[torch.arange(b), 2 * b + torch.arange(b)] = True  # own negatives
    mask[0, [b + 1, 2 * b + 1, b + 2]] = True
    idx = select_semi_hard(a, p, n, mask, margin=0.1)
    assert idx[0].item() == 2 * b + 1  # negative 1: the smallest d among 0.1206 < d < 0.2206
    # Without that candidate, the next semi-hard one: positive 1.
    mask[0, 2 * b + 1] = False
    assert select_semi_hard(a, p, n, mask, margin=0.1)[0].item() == b + 1
    # With no semi-hard candidate, the closest one farther than the positive (own negative).
    mask[0, b + 1] = False
    assert select_semi_hard(a, p, n, mask, margin=0.1)[0].item() == 2 * b
    # Rows with only their own negative keep it.
    assert idx[1].item() == 2 * b + 1 and idx[2].item() == 2 * b + 2


def test_semi_hard_falls_back_to_own_negative_when_all_are_closer_than_the_positive():
    a, p, n = unit(0), unit(60), unit(10)
    mask = torch.tensor([[False, False, True]])
    assert select_semi_hard(a, p, n, mask, margin=0.1).tolist() == [2]


def test_mining_loss_uses_the_mined_negative():
    a, p, n = _batch()
    b = 3
    mask = torch.zeros(b, 3 * b, dtype=torch.bool)
    mask[torch.arange(b), 2 * b + torch.arange(b)] = True
    mask[0, [b + 1, 2 * b + 1, b + 2]] = True
    mined, _ = TripletLoss(margin=0.1, mining=True)(a, p, n, mask)
    n_mined = n.clone()
    n_mined[0] = n[1]
    expected, _ = triplet_loss(a, p, n_mined, margin=0.1)
    torch.testing.assert_close(mined, expected)
    with pytest.raises(ValueError, match="candidates"):
        TripletLoss(mining=True)(a, p, n)
    plain, _ = TripletLoss(margin=0.1, mining=False)(a, p, n, mask)
    assert plain.item() < mined.item()


def test_mining_respects_the_mask_over_closer_windows():
    # Positive 1 (column 3, at 23 deg: d 0.1590) is semi-hard for anchor 0 (d_ap 0.1206) but,
    # masked out (say, it is from anchor 0's recording), mining must not pick it.
    a, p, n = unit(0, 180), unit(20, 23), unit(120, 300)
    mask = torch.tensor([[False, False, False, False, True, False],
                         [False, False, False, False, False, True]])
    assert select_semi_hard(a, p, n, mask, 0.1).tolist() == [4, 5]
    mask[0, 3] = True
    assert select_semi_hard(a, p, n, mask, 0.1).tolist() == [3, 5]


def test_soft_margin_is_softplus_of_the_distance_gap():
    a, p, n = unit(0, 90), unit(30, 100), unit(60, 95)
    loss, stats = TripletLoss(margin=0.1, kind="soft-margin")(a, p, n)
    gaps = [chord2(30) - chord2(60), chord2(10) - chord2(5)]
    expected = sum(math.log1p(math.exp(g)) for g in gaps) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # "active" keeps the hinge's meaning: only the second triplet is within the margin.
    assert stats["active"].item() == pytest.approx(0.5)
    # Unlike the hinge, an easy triplet still gives gradient.
    a.requires_grad_(True)
    easy, _ = TripletLoss(margin=0.1, kind="soft-margin")(a[:1], p[:1], n[:1])
    easy.backward()
    assert a.grad.abs().sum() > 0


def test_batch_all_averages_the_hinge_over_every_allowed_negative():
    a, p = unit(0), unit(20)
    pool = unit(25, 90, 30)  # d: chord2(25), chord2(90), chord2(30)
    allowed = torch.tensor([[True, True, False]])
    loss, stats = batch_all_loss(a, p, pool, allowed, margin=0.1)
    hinges = [max(0.0, chord2(20) - chord2(25) + 0.1), max(0.0, chord2(20) - chord2(90) + 0.1)]
    assert loss.item() == pytest.approx(sum(hinges) / 2, abs=1e-6)
    assert stats["active"].item() == pytest.approx(0.5)  # 1 of the 2 allowed pairs
    # Through TripletLoss: the pool is [positives, negatives] with candidates[:, B:].
    a2, p2, n2 = unit(0, 180), unit(20, 200), unit(25, 90)
    cand = torch.tensor([[False, False, False, True, True, True],
                         [False, False, False, False, False, True]])
    got, _ = TripletLoss(margin=0.1, mining=True, kind="batch-all")(a2, p2, n2, cand)
    row0 = [max(0.0, chord2(20) - chord2(d) + 0.1) for d in (160, 25, 90)]  # p1 at 200, n0, n1
    row1 = [max(0.0, chord2(20) - chord2(90) + 0.1)]  # anchor 180 to n1 at 90
    assert got.item() == pytest.approx((sum(row0) / 3 + sum(row1)) / 2, abs=1e-6)


def test_nt_xent_matches_the_formula_and_excludes_same_recording_views():
    v1, v2 = unit(0, 90, 180), unit(10, 100, 200)
    t = 0.5
    recs = torch.tensor([[0], [1], [2], [0], [1], [2]])
    loss, _ = NTXentLoss(temperature=t, embedding_dim=2)(v1, v2, recs)
    z = torch.cat([v1, v2]).double()
    sims = z @ z.T / t
    expected = 0.0
    for i in range(6):
        pos = (i + 3) % 6
        others = [j for j in range(6) if j != i]
        expected += -(sims[i, pos] - torch.logsumexp(sims[i, others], 0)).item()
    assert loss.item() == pytest.approx(expected / 6, abs=1e-5)
    # Views 0 and 1 from one recording: neither is the other's negative any more.
    recs_shared = torch.tensor([[0], [0], [2], [0], [0], [2]])
    shared, _ = NTXentLoss(temperature=t, embedding_dim=2)(v1, v2, recs_shared)
    exp2 = 0.0
    for i in range(6):
        pos = (i + 3) % 6
        others = [j for j in range(6) if j != i and (j == pos or recs_shared[j] != recs_shared[i])]
        exp2 += -(sims[i, pos] - torch.logsumexp(sims[i, others], 0)).item()
    assert shared.item() == pytest.approx(exp2 / 6, abs=1e-5)
    assert shared.item() != pytest.approx(loss.item(), abs=1e-3)


def test_projection_head_is_trained_and_separate_from_the_embedding():
    loss_fn = NTXentLoss(temperature=0.1, projection_dim=16, embedding_dim=8)
    v1, v2 = torch.randn(2, 4, 8).unbind()
    loss, _ = loss_fn(v1, v2, torch.arange(8).reshape(8, 1))
    loss.backward()
    assert all(p.grad is not None for p in loss_fn.parameters())
    assert sum(p.numel() for p in loss_fn.parameters()) == 8 * 512 + 512 + 512 * 16 + 16


def test_shares_recording_handles_mixtures_and_empty_slots():
    a = torch.tensor([[3, -1, -1], [1, 2, -1]])
    b = torch.tensor([[-1, -1, -1], [2, 5, -1], [3, -1, -1]])
    assert shares_recording(a, b).tolist() == [[False, False, True], [False, True, False]]


def test_pool_never_offers_a_window_of_the_anchors_recording():
    pool = NegativePool(xbm_size=8, dim=2)
    # Memory: windows of recordings 7 (close to anchor 0) and 9.
    pool.memory.enqueue(unit(15, 40), torch.tensor([[7, -1, -1], [9, -1, -1]]))
    a, p, n = unit(0, 180), unit(10, 190), unit(120, 300)
    recs = torch.tensor([[7, -1, -1], [8, -1, -1], [7, -1, -1], [8, -1, -1], [1, -1, -1], [2, -1, -1]])
    cand = torch.zeros(2, 6, dtype=torch.bool)
    cand[0, 4] = cand[1, 5] = True
    windows, allowed, own, _ = pool.build(a, p, n, recs, cand, torch.tensor([True, True]))
    assert windows.shape[0] == 4 + 2
    # Anchor 0 (recording 7) may not take the memory's recording-7 window, anchor 1 may.
    assert allowed[0, 4:].tolist() == [False, True] and allowed[1, 4:].tolist() == [True, True]
    assert own.tolist() == [2, 3]
    # A triplet that may not be mined (mixing) gets no pool windows at all.
    _, allowed2, _, _ = pool.build(a, p, n, recs, cand, torch.tensor([False, True]))
    assert not allowed2[0, 4:].any()
    # Mining over the memory: anchor 0's semi-hard pick is the recording-9 window only if allowed.
    loss_fn = TripletLoss(margin=0.5, mining=True)
    _, stats = loss_fn(a, p, n, cand, pool=pool, recs=recs, pool_ok=torch.tensor([True, True]))
    assert stats["pool_size"].item() == pytest.approx((2 + 3) / 2)


def test_cross_batch_memory_wraps_around_keeping_the_newest():
    mem = CrossBatchMemory(size=5, dim=1)
    for start in (0, 3, 6):
        rows = torch.arange(start, start + 3, dtype=torch.float32).reshape(3, 1)
        mem.enqueue(rows, torch.full((3, 3), start))
    emb, recs = mem.contents()
    assert mem.filled == 5 and mem.ptr == 4
    assert sorted(emb.flatten().tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]  # 0-3 overwritten
    mem.enqueue(torch.arange(100, 112, dtype=torch.float32).reshape(12, 1), torch.zeros(12, 3, dtype=torch.long))
    assert sorted(mem.contents()[0].flatten().tolist()) == [107.0, 108.0, 109.0, 110.0, 111.0]
    state = mem.state_dict()
    other = CrossBatchMemory(size=5, dim=1)
    other.load_state_dict(state)
    assert torch.equal(other.contents()[0], mem.contents()[0]) and other.ptr == mem.ptr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)
        a, p, n = (torch.nn.functional.normalize(torch.randn(2, 4), dim=1) for _ in range(3))
        # Rank r's windows come from recordings 10r..10r+5; anchor 0 of rank 0 shares recording 11
        # with rank 1's positive 0.
        recs = torch.tensor([[10 * rank + k, -1, -1] for k in range(6)])
        if rank == 1:
            recs[2, 0] = 0  # rank 1's positive 0 holds anchor 0 of rank 0's recording
        cand = torch.zeros(2, 6, dtype=torch.bool)
        cand[0, 4] = cand[1, 5] = True
        pool = NegativePool(gather=True, xbm_size=16, dim=4)
        windows, allowed, _, mine = pool.build(a, p, n, recs, cand, torch.tensor([True, True]))
        pool.update(mine, step=0)
        views = torch.tensor([[10 * rank + k, -1, -1] for k in (0, 1, 0, 1)])  # 2 examples, 2 views
        _, nt = NTXentLoss(temperature=0.1, embedding_dim=4, gather=True)(a, p, views)
        out[rank] = {"windows": windows.shape[0], "allowed": allowed.tolist(),
                     "memory": pool.memory.filled, "others": windows[4:].tolist(),
                     "mine": torch.cat([p, n]).tolist(), "nt_pool": nt["pool_size"].item()}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_negatives_are_gathered_across_two_gloo_processes():
    out = mp.Manager().dict()
    mp.spawn(_gather_worker, args=(_free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        other = 1 - rank
        assert out[rank]["windows"] == 4 + 4  # own 2B, then the other rank's 2B
        # The other rank's windows arrive exactly, in its order.
        np.testing.assert_allclose(out[rank]["others"], out[other]["mine"], atol=1e-6)
        assert out[rank]["memory"] == 8  # both ranks' windows, on both ranks
        # NT-Xent: each view's negatives are the other local example's 2 views and the other
        # rank's 4 views (its own partner is the positive, its own recording is excluded).
        assert out[rank]["nt_pool"] == 6
    # Rank 0's anchor 0 (recording 0) may not take rank 1's positive 0 (which holds recording 0).
    assert out[0]["allowed"][0][4:] == [False, True, True, True]
    assert out[0]["allowed"][1][4:] == [True, True, True, True]
