"""TripletLoss and the distances against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from streamproc.training.distances import pairwise_squared_l2, rowwise_squared_l2
from streamproc.training.losses import TripletLoss
from streamproc.training.miners import Triplets


def triplets(*rows: tuple[int, int, int]) -> Triplets:
    a, p, n = zip(*rows, strict=True)
    return Triplets(torch.tensor(a), torch.tensor(p), torch.tensor(n))


# Unit vectors at 0, 30, 60 and 90 degrees: squared distance 2 - 2 cos(angle).
ANGLES = [0.0, 30.0, 60.0, 90.0]
UNIT = torch.tensor(
    [[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in ANGLES], dtype=torch.float64
)


def sq(deg: float) -> float:
    return 2.0 - 2.0 * math.cos(math.radians(deg))


@pytest.mark.parametrize(
    ("rows", "margin", "expected_loss", "active"),
    [
        # a=0, p=1 (30 deg: 0.268), n=2 (60 deg: 1.0): 0.268 - 1.0 + 0.2 < 0 -> 0
        ([(0, 1, 2)], 0.2, 0.0, 0.0),
        # margin 1.0: 0.268 - 1.0 + 1.0 = 0.268
        ([(0, 1, 2)], 1.0, sq(30) - sq(60) + 1.0, 1.0),
        # a=0, p=2 (1.0), n=1 (0.268): 1.0 - 0.268 + 0.2 = 0.932; with a zero triplet the mean halves
        ([(0, 2, 1), (0, 1, 3)], 0.2, (sq(60) - sq(30) + 0.2) / 2, 0.5),
        # a=1, p=3 (60 deg), n=0 (30 deg) and n=2 (30 deg): both 1.0 - 0.268 + 0.2
        ([(1, 3, 0), (1, 3, 2)], 0.2, sq(60) - sq(30) + 0.2, 1.0),
    ],
)
def test_loss_values(
    rows: list[tuple[int, int, int]], margin: float, expected_loss: float, active: float
) -> None:
    loss, stats = TripletLoss(margin)(UNIT, triplets(*rows))
    assert loss.item() == pytest.approx(expected_loss, abs=1e-12)
    assert stats.active_fraction == active
    assert stats.triplets == len(rows)


def test_stats_distances() -> None:
    _, stats = TripletLoss(0.2)(UNIT, triplets((0, 1, 3), (0, 2, 3)))
    assert stats.pos_distance == pytest.approx((sq(30) + sq(60)) / 2)
    assert stats.neg_distance == pytest.approx(sq(90))
    assert set(stats.as_dict("train_")) == {
        "train_triplets",
        "train_active_fraction",
        "train_pos_distance",
        "train_neg_distance",
    }


def test_gradient_by_hand() -> None:
    # L = d(a,p) - d(a,n) + m = |a-p|^2 - |a-n|^2 + m  ->  dL/da = 2(a-p) - 2(a-n) = 2(n-p)
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]], requires_grad=True)
    loss, _ = TripletLoss(0.2)(emb, triplets((0, 1, 2)))
    assert loss.item() == pytest.approx(1.0 - 0.25 + 0.2)
    loss.backward()
    assert emb.grad is not None
    assert emb.grad.flatten().tolist() == pytest.approx([-2.0, 1.0, 2.0, 0.0, 0.0, -1.0])


def test_empty_triplets_give_a_zero_loss_with_a_graph() -> None:
    emb = UNIT.clone().requires_grad_(True)
    loss, stats = TripletLoss(0.2)(emb, Triplets.empty())
    loss.backward()
    assert loss.item() == 0.0 and stats.triplets == 0
    assert emb.grad is not None and not emb.grad.any()


def test_negative_margin_is_rejected() -> None:
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(-0.1)


def test_distances() -> None:
    expected = torch.tensor([[sq(abs(a - b)) for b in ANGLES] for a in ANGLES], dtype=torch.float64)
    assert torch.allclose(pairwise_squared_l2(UNIT), expected, atol=1e-12)
    assert torch.allclose(pairwise_squared_l2(UNIT[:2], UNIT), expected[:2], atol=1e-12)
    assert bool((pairwise_squared_l2(UNIT).diagonal() == 0).all())
    assert rowwise_squared_l2(UNIT, UNIT.roll(1, 0)).tolist() == pytest.approx(
        [sq(90), sq(30), sq(30), sq(30)]
    )
