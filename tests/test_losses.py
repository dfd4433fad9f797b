"""Triplet loss (eq. 1) against hand computation, and semi-hard mining on hand-built batches."""
from __future__ import annotations

import math

import pytest
import torch

from training.losses import TripletLoss, select_semi_hard, squared_distances, triplet_loss


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
