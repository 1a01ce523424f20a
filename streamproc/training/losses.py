"""The FaceNet triplet loss (Schroff et al. 2015, eq. 1-3) over mined triplets.

    L = mean over triplets of max(0, d(a, p) - d(a, n) + margin)

with ``d`` the squared L2 distance of L2-normalised embeddings (the models end with an L2
normalisation; the loss does not normalise again). The mean is over *all* mined triplets, active
or not. An empty set of triplets gives a zero loss that is still connected to the graph.

>>> emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
>>> loss, stats = TripletLoss(margin=0.2)(emb, Triplets(*(torch.tensor([i]) for i in (0, 1, 2))))
>>> round(loss.item(), 4), stats.active_fraction, round(stats.pos_distance, 4), round(stats.neg_distance, 4)
(0.0, 0.0, 0.4, 0.8)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from streamproc.training.distances import rowwise_squared_l2
from streamproc.training.miners import Triplets

__all__ = ["TripletLoss", "TripletStats"]

RowwiseDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TripletStats:
    """What one loss evaluation saw; plain floats (no graph).

    Example:
        >>> TripletStats.empty().triplets
        0
    """

    triplets: int  # triplets in the loss
    active_fraction: float  # share with a positive loss (violating the margin)
    pos_distance: float  # mean d(a, p)
    neg_distance: float  # mean d(a, n)

    @classmethod
    def empty(cls) -> TripletStats:
        return cls(0, 0.0, float("nan"), float("nan"))

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}triplets": float(self.triplets),
            f"{prefix}active_fraction": self.active_fraction,
            f"{prefix}pos_distance": self.pos_distance,
            f"{prefix}neg_distance": self.neg_distance,
        }


class TripletLoss(nn.Module):
    """``forward(embeddings, triplets) -> (loss, TripletStats)``; the distance is injectable.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        >>> loss, _ = TripletLoss(0.2)(emb, Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
        >>> round(loss.item(), 4)
        2.2
    """

    def __init__(self, margin: float = 0.2, distance: RowwiseDistance = rowwise_squared_l2) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin: expected a non-negative number, got {margin}")
        self.margin = margin
        self.distance = distance

    def forward(self, embeddings: torch.Tensor, triplets: Triplets) -> tuple[torch.Tensor, TripletStats]:
        if triplets.size == 0:
            return embeddings.sum() * 0.0, TripletStats.empty()
        anchor = embeddings[triplets.anchor]
        d_ap = self.distance(anchor, embeddings[triplets.positive])
        d_an = self.distance(anchor, embeddings[triplets.negative])
        per_triplet = torch.relu(d_ap - d_an + self.margin)
        stats = TripletStats(
            triplets=triplets.size,
            active_fraction=float((per_triplet.detach() > 0).float().mean()),
            pos_distance=float(d_ap.detach().mean()),
            neg_distance=float(d_an.detach().mean()),
        )
        return per_triplet.mean(), stats
