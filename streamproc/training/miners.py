"""Triplet miners: every anchor-positive pair of a batch, each with one negative (FaceNet section 3.2).

A miner is called with ``(N, D)`` embeddings and ``(N,)`` integer identity labels and returns a
:class:`Triplets` of three equally long int64 index tensors. The base class :class:`Miner` checks the
inputs, runs the subclass's ``mine`` without gradient, and checks the output (anchor and positive
share a label and differ in index, the negative has another label). The paper uses *all*
anchor-positive pairs (ordered: ``(a, p)`` and ``(p, a)`` are two triplets) and picks the negative:

* :class:`SemiHardMiner` -- a *semi-hard* negative, farther than the positive but inside the margin,
  ``d(a,p) < d(a,n) < d(a,p) + margin``; the closest such one (the hardest semi-hard negative).
  **When a pair has none**, the rule is: take the closest negative farther than the positive if any
  exists (it lies beyond the margin, so the triplet is satisfied: zero loss, counted as inactive);
  otherwise every negative is at most as far as the positive (all are *hard*) and the miner takes
  the farthest of them, the easiest hard negative -- it still gives a gradient, but a gentler one
  than the hardest negative, whose use the paper reports can collapse the model early in training.
  Either way every pair keeps exactly one triplet. ``d(a,n) == d(a,p)`` counts as hard.
* :class:`HardestMiner` -- the closest negative (``argmin d(a,n)``).
* :class:`RandomNegativeMiner` -- a uniformly random negative, from a seeded generator (every
  distributed worker holding the same generator state draws the same negatives).

Ties in distance go to the lowest index. A batch with fewer than two identities has no triplets.

>>> emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
>>> labels = torch.tensor([0, 0, 1, 1])
>>> [t.tolist() for t in HardestMiner()(emb, labels)]
[[0, 1, 2, 3], [1, 0, 3, 2], [2, 2, 1, 1]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch

from streamproc.training.distances import pairwise_squared_l2

__all__ = [
    "HardestMiner",
    "Miner",
    "RandomNegativeMiner",
    "SemiHardMiner",
    "Triplets",
    "all_positive_pairs",
    "build_miner",
]

PairwiseDistance = Callable[[torch.Tensor], torch.Tensor]


class Triplets(NamedTuple):
    """Index tensors of mined triplets: ``embeddings[anchor[i]], embeddings[positive[i]], ...``."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    @property
    def size(self) -> int:
        """The number of triplets."""
        return int(self.anchor.numel())

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> Triplets:
        none = torch.zeros(0, dtype=torch.long, device=device)
        return cls(none, none.clone(), none.clone())


def all_positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair ``(a, p)`` with ``a != p`` and the same label, sorted by ``a`` then ``p``.

    >>> [t.tolist() for t in all_positive_pairs(torch.tensor([0, 1, 0]))]
    [[0, 2], [2, 0]]
    """
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    anchor, positive = torch.nonzero(same, as_tuple=True)
    return anchor, positive


class Miner(ABC):
    """Base of the miners: validates, mines without gradient, validates again.

    Subclasses implement ``mine(embeddings, labels, dist) -> Triplets`` where ``dist`` is the
    ``(N, N)`` matrix of the injected pairwise distance (squared L2 by default).
    """

    def __init__(self, distance: PairwiseDistance = pairwise_squared_l2) -> None:
        self.distance = distance

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        if embeddings.ndim != 2 or not embeddings.is_floating_point():
            raise ValueError(
                f"embeddings: expected a float (N, D) tensor, got {embeddings.dtype} {tuple(embeddings.shape)}"
            )
        if labels.shape != (embeddings.shape[0],) or labels.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"labels: expected ({embeddings.shape[0]},) integer labels, got {labels.dtype} {tuple(labels.shape)}"
            )
        labels = labels.to(embeddings.device)
        if torch.unique(labels).numel() < 2:
            return Triplets.empty(embeddings.device)
        with torch.no_grad():
            detached = embeddings.detach()
            triplets = self.mine(detached, labels, self.distance(detached))
        self._check(triplets, labels)
        return triplets

    @abstractmethod
    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor) -> Triplets:
        """The triplets of one batch; ``dist`` is the ``(N, N)`` pairwise distance matrix."""

    def _check(self, triplets: Triplets, labels: torch.Tensor) -> None:
        name = type(self).__name__
        if not isinstance(triplets, Triplets):
            raise TypeError(f"{name}.mine: expected Triplets, got {type(triplets).__name__}")
        n = labels.numel()
        length = triplets.anchor.shape
        for field, index in zip(Triplets._fields, triplets, strict=True):
            if index.dtype != torch.long or index.ndim != 1 or index.shape != length:
                raise ValueError(
                    f"{name}.mine: expected {field} as int64 of shape {tuple(length)}, "
                    f"got {index.dtype} {tuple(index.shape)}"
                )
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
                raise ValueError(f"{name}.mine: {field} index outside [0, {n})")
        a, p, neg = triplets
        if bool((a == p).any()) or bool((labels[a] != labels[p]).any()):
            raise ValueError(f"{name}.mine: expected anchor and positive of the same label at other indices")
        if bool((labels[a] == labels[neg]).any()):
            raise ValueError(f"{name}.mine: expected negatives with another label than their anchor")


def _negative_distances(
    dist: torch.Tensor, labels: torch.Tensor, anchor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, N)`` distances from each pair's anchor to every sample, and the mask of its negatives."""
    return dist[anchor], labels[anchor][:, None] != labels[None, :]


class SemiHardMiner(Miner):
    """All anchor-positive pairs with the closest negative farther than the positive (module docstring).

    >>> emb = torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.0, -0.6], [0.0, 1.0]])
    >>> [t.tolist() for t in SemiHardMiner(margin=0.2)(emb, torch.tensor([0, 0, 1, 1]))][2]
    [2, 2, 1, 0]
    """

    def __init__(self, margin: float = 0.2, distance: PairwiseDistance = pairwise_squared_l2) -> None:
        super().__init__(distance)
        if margin <= 0:
            raise ValueError(f"margin: expected a positive number, got {margin}")
        self.margin = margin

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor) -> Triplets:
        anchor, positive = all_positive_pairs(labels)
        d_an, negative_mask = _negative_distances(dist, labels, anchor)
        d_ap = dist[anchor, positive][:, None]
        farther = negative_mask & (d_an > d_ap)
        inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
        closest_farther = torch.where(farther, d_an, inf).argmin(dim=1)
        farthest_hard = torch.where(negative_mask, d_an, -inf).argmax(dim=1)
        negative = torch.where(farther.any(dim=1), closest_farther, farthest_hard)
        return Triplets(anchor, positive, negative)


class HardestMiner(Miner):
    """All anchor-positive pairs with the closest negative of each anchor.

    >>> emb = torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.0, -0.6], [0.0, 1.0]])
    >>> HardestMiner()(emb, torch.tensor([0, 0, 1, 1])).negative.tolist()
    [2, 3, 0, 1]
    """

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor) -> Triplets:
        anchor, positive = all_positive_pairs(labels)
        d_an, negative_mask = _negative_distances(dist, labels, anchor)
        inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
        return Triplets(anchor, positive, torch.where(negative_mask, d_an, inf).argmin(dim=1))


class RandomNegativeMiner(Miner):
    """All anchor-positive pairs with a uniformly random negative, drawn from a seeded generator.

    >>> emb = torch.eye(4)
    >>> t = RandomNegativeMiner(seed=0)(emb, torch.tensor([0, 0, 1, 1]))
    >>> [t.size, all(n in (2, 3) for n in t.negative[:2].tolist())]
    [4, True]
    """

    def __init__(self, seed: int = 0, distance: PairwiseDistance = pairwise_squared_l2) -> None:
        super().__init__(distance)
        self.generator = torch.Generator().manual_seed(seed)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor) -> Triplets:
        anchor, positive = all_positive_pairs(labels)
        negative_mask = (labels[anchor][:, None] != labels[None, :]).cpu()
        # Random keys, masked to the negatives; the largest key is a uniform choice among them.
        keys = torch.rand(negative_mask.shape, generator=self.generator)
        negative = torch.where(negative_mask, keys, -1.0).argmax(dim=1).to(labels.device)
        return Triplets(anchor, positive, negative)


MINERS = ("semi-hard", "hardest", "random")


def build_miner(kind: str, margin: float = 0.2, seed: int = 0) -> Miner:
    """The miner named in a training config: ``semi-hard``, ``hardest`` or ``random``."""
    if kind == "semi-hard":
        return SemiHardMiner(margin)
    if kind == "hardest":
        return HardestMiner()
    if kind == "random":
        return RandomNegativeMiner(seed)
    raise ValueError(f"mining: expected one of {', '.join(MINERS)}, got {kind!r}")
