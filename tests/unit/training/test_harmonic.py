"""The harmonic triplet loss: mixed triplets only, gradient only into the new model, and it works."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from streamproc.training.harmonic import combine, harmonic_triplet_loss, mixed_only
from streamproc.training.losses import TripletLoss
from streamproc.training.miners import SemiHardMiner, Triplets


def test_mixed_only_drops_exactly_the_all_old_triplets() -> None:
    idx = torch.tensor
    triplets = Triplets(idx([0, 4, 4, 5, 1]), idx([4, 5, 1, 6, 5]), idx([5, 6, 7, 7, 6]))
    kept = mixed_only(triplets, n_new=4)
    expected = [
        (a, p, n) for a, p, n in zip(*(t.tolist() for t in triplets), strict=True) if min(a, p, n) < 4
    ]
    assert list(zip(*(t.tolist() for t in kept), strict=True)) == expected


def test_combined_batch_mines_across_models_and_only_the_new_model_gets_gradient() -> None:
    torch.manual_seed(0)
    labels = torch.arange(8).repeat_interleave(4)
    new = F.normalize(torch.randn(32, 16), dim=1).requires_grad_(True)
    old = F.normalize(torch.randn(32, 16), dim=1).requires_grad_(True)
    out = harmonic_triplet_loss(new, old, labels, SemiHardMiner(0.2), TripletLoss(0.2))
    t = out.triplets
    assert t.size > 0
    cross = ((t.anchor < 32) != (t.positive < 32)) | ((t.anchor < 32) != (t.negative < 32))
    assert bool(cross.any()), "no triplet mixes the two models"
    assert not bool(((t.anchor >= 32) & (t.positive >= 32) & (t.negative >= 32)).any())
    out.backward_loss.backward()
    assert new.grad is not None and float(new.grad.abs().sum()) > 0
    assert old.grad is None  # the old model is frozen: detached


def test_combine_rejects_mismatched_shapes() -> None:
    try:
        combine(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    except ValueError as exc:
        assert "one shape" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def _train(harmonic: bool) -> float:
    """A linear head on 'new-model features' trained with or without v1 in the batch; returns the
    mean distance from each v2 embedding to the v1 embedding of the same identity's centre minus
    the distance to other identities' (negative = mixed-mode matching works)."""
    g = torch.Generator().manual_seed(1)
    ids = 12
    v1_centres = F.normalize(torch.randn(ids, 8, generator=g), dim=1)
    feat_centres = torch.randn(ids, 24, generator=g)  # the new trunk: another space entirely
    labels = torch.arange(ids).repeat_interleave(6)
    feats = feat_centres[labels] + 0.1 * torch.randn(len(labels), 24, generator=g)
    v1 = F.normalize(v1_centres[labels] + 0.05 * torch.randn(len(labels), 8, generator=g), dim=1)
    head = torch.nn.Linear(24, 8)
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    miner, loss_fn = SemiHardMiner(0.2), TripletLoss(0.2)
    for _ in range(150):
        opt.zero_grad()
        new = F.normalize(head(feats), dim=1)
        if harmonic:
            out = harmonic_triplet_loss(new, v1, labels, miner, loss_fn)
        else:
            from streamproc.training.distributed import global_triplet_loss

            out = global_triplet_loss(new, labels, miner, loss_fn)
        out.backward_loss.backward()
        opt.step()
    with torch.no_grad():
        new = F.normalize(head(feats), dim=1)
        d = torch.cdist(new, v1_centres) ** 2
        same = d[torch.arange(len(labels)), labels]
        other = d.masked_fill(F.one_hot(labels, ids).bool(), float("inf")).min(dim=1).values
    return float((same < other).float().mean())


def test_harmonic_head_matches_the_old_space_and_a_plain_head_does_not() -> None:
    assert _train(harmonic=True) >= 0.95
    assert _train(harmonic=False) <= 0.5
