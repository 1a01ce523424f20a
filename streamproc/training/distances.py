"""Squared L2 distances between embeddings, the distance of the FaceNet triplet loss.

Miners need the full ``(N, N)`` matrix (no gradient); the loss needs the distance of each
mined pair, differentiable and exact, so it has its own row-wise function.

>>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
>>> pairwise_squared_l2(x).tolist()
[[0.0, 2.0], [2.0, 0.0]]
>>> rowwise_squared_l2(x, x.flip(0)).tolist()
[2.0, 2.0]
"""

from __future__ import annotations

import torch

__all__ = ["pairwise_squared_l2", "rowwise_squared_l2"]


def pairwise_squared_l2(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, D)`` and ``(M, D)`` -> ``(N, M)`` squared distances, clamped at 0 (rounding), diagonal 0 when
    ``y`` is None."""
    same = y is None
    other = x if y is None else y
    sq = (x * x).sum(dim=1)[:, None] + (other * other).sum(dim=1)[None, :] - 2.0 * x @ other.T
    sq = sq.clamp_min(0.0)
    if same:
        sq.fill_diagonal_(0.0)
    return sq


def rowwise_squared_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` and ``(N, D)`` -> ``(N,)``: ``sum((a - b) ** 2)`` per row, exact and differentiable."""
    return (a - b).pow(2).sum(dim=1)
