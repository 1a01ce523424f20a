"""Harmonic embeddings (FaceNet section 7): train a new model v2 whose embeddings compare with v1's.

The frozen old model's embeddings of the same faces join the batch: for a batch of B faces the
miner sees 2B embeddings, ``[v2 rows; v1 rows]``, with the same labels, so anchors come from either
model and positives and negatives from either (the paper's mixed triplets). Semi-hard mining runs
over the combined set; triplets made of v1 rows only are dropped (they carry no gradient, v1 is
frozen). A v2 face and the v1 embedding of the same image are a positive pair, which pulls v2 onto
v1's space where v1 already separates identities. With ``weight_old = 0`` it is ordinary training
(the non-harmonic baseline).

Example:
    >>> from streamproc.training.miners import SemiHardMiner
    >>> new = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    >>> old = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    >>> out = harmonic_triplet_loss(new, old, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), SemiHardMiner(), TripletLoss())
    >>> bool((out.triplets.anchor < 8).any() or (out.triplets.positive < 8).any())
    True
"""

from __future__ import annotations

import torch

from streamproc.training.distributed import GlobalLoss, gather_global, rank_and_world_size
from streamproc.training.losses import TripletLoss
from streamproc.training.miners import Miner, Triplets

__all__ = ["combine", "harmonic_triplet_loss", "mixed_only"]


def combine(new: torch.Tensor, old: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[new; old]`` rows and their labels; ``old`` is detached (the old model is frozen)."""
    if new.shape != old.shape:
        raise ValueError(
            f"harmonic loss: expected new and old embeddings of one shape, got {new.shape} and {old.shape}"
        )
    return torch.cat([new, old.detach().to(new.dtype)]), torch.cat([labels, labels])


def mixed_only(triplets: Triplets, n_new: int) -> Triplets:
    """Drop the triplets whose three rows are all old-model rows (index >= ``n_new``)."""
    keep = (triplets.anchor < n_new) | (triplets.positive < n_new) | (triplets.negative < n_new)
    return Triplets(triplets.anchor[keep], triplets.positive[keep], triplets.negative[keep])


def harmonic_triplet_loss(
    new: torch.Tensor, old: torch.Tensor, labels: torch.Tensor, miner: Miner, loss_fn: TripletLoss
) -> GlobalLoss:
    """Gather both models' rows of the global batch, mine over them together, and return the loss.

    Like ``global_triplet_loss``, ``backward_loss`` is scaled by the world size for DDP.
    """
    _, world = rank_and_world_size()
    global_new, global_labels = gather_global(new, labels)
    global_old, _ = gather_global(old.detach(), labels)
    embeddings, both_labels = combine(global_new, global_old, global_labels)
    triplets = mixed_only(miner(embeddings, both_labels), len(global_new))
    loss, stats = loss_fn(embeddings, triplets)
    return GlobalLoss(loss * world, loss.detach(), stats, triplets, world)
