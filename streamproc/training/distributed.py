"""Triplet mining over the global batch of all data-parallel workers, with the exact gradient.

Each of the ``W`` workers embeds its own shard (``B / W`` images, shards in rank order make up the
global batch). :func:`gather_global` all-gathers embeddings and labels so that every worker holds
the same ``(B, D)`` global batch; the slice of its own rank is replaced by the local tensor, which
carries the gradient (``all_gather`` itself passes no gradient). Every worker then mines the same
triplets (same values, same deterministic miner; a random miner needs the same generator state on
every worker) and computes the *same* global loss ``L`` = mean over all triplets of the global batch.

The scaling argument. Write ``e_i`` for the embedding of image ``i`` and ``S_r`` for the images of
rank ``r``. One worker holding the whole batch would step with

    g = dL/dθ = Σ_i (∂L/∂e_i)(∂e_i/∂θ) = Σ_r g_r,   g_r = Σ_{i ∈ S_r} (∂L/∂e_i)(∂e_i/∂θ).

On rank ``r`` only the rows of ``S_r`` carry gradient, so back-propagating ``L`` there yields exactly
``g_r`` (the other rows are constants with the same values). DDP then *averages* the ranks'
gradients: ``(1/W) Σ_r g_r = g / W``. Back-propagating ``W · L`` on every rank therefore makes DDP's
average ``Σ_r g_r = g``: the same gradient, hence the same optimizer step, as one worker with the
whole batch (up to float summation order). Restricting each rank to triplets with a local anchor
would be wrong: a triplet's positive and negative may live on another rank, and their gradient
would be lost. The loss *reported* is ``L`` itself. (BatchNorm layers in train mode normalise with
per-worker statistics and break the equality; the frozen-trunk fine-tuning runs the model in eval
mode, and the equivalence test uses a model without BatchNorm.)

With world size 1, or when ``torch.distributed`` is not initialised, nothing is gathered.

>>> from streamproc.training.miners import SemiHardMiner
>>> emb = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
>>> out = global_triplet_loss(emb, torch.arange(8) // 2, SemiHardMiner(0.2), TripletLoss(0.2))
>>> out.world_size, out.stats.triplets, bool(out.backward_loss == out.loss)
(1, 8, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from streamproc.training.losses import TripletLoss, TripletStats
from streamproc.training.miners import Miner, Triplets

__all__ = ["GlobalLoss", "gather_global", "global_triplet_loss", "rank_and_world_size"]


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_global(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch ``(B, D)`` and ``(B,)`` in rank order; this rank's rows keep their gradient.

    Every rank must pass the same number of rows (the sampler's shards are equal).
    """
    rank, world = rank_and_world_size()
    if world == 1:
        return embeddings, labels
    parts = [torch.empty_like(embeddings) for _ in range(world)]
    dist.all_gather(parts, embeddings.detach().contiguous())
    parts[rank] = embeddings
    label_parts = [torch.empty_like(labels) for _ in range(world)]
    dist.all_gather(label_parts, labels.contiguous())
    return torch.cat(parts), torch.cat(label_parts)


@dataclass(frozen=True)
class GlobalLoss:
    """``backward_loss`` (``world_size · loss``) is what to back-propagate under DDP; ``loss`` is ``L``.

    Example (one process, so ``world_size`` is 1):
        >>> from streamproc.training.miners import HardestMiner
        >>> out = global_triplet_loss(torch.eye(4), torch.tensor([0, 0, 1, 1]), HardestMiner(), TripletLoss(0.2))
        >>> out.world_size, round(out.loss.item(), 2)
        (1, 0.2)
    """

    backward_loss: torch.Tensor
    loss: torch.Tensor  # detached
    stats: TripletStats
    triplets: Triplets
    world_size: int


def global_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, miner: Miner, loss_fn: TripletLoss
) -> GlobalLoss:
    """Gather, mine on the global batch, and return the loss scaled for DDP's gradient averaging."""
    _, world = rank_and_world_size()
    global_emb, global_labels = gather_global(embeddings, labels)
    triplets = miner(global_emb, global_labels)
    loss, stats = loss_fn(global_emb, triplets)
    return GlobalLoss(loss * world, loss.detach(), stats, triplets, world)
