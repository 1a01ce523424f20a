"""Compatible heads on a frozen trunk, fitted on cached features: seconds, not a training job.

A harmonic v2 here is the frozen MobileFaceNet trunk (192-D unnormalised features) with a new
linear ``192 -> 128`` head whose L2-normalised output is comparable with v1's embeddings. The trunk
is frozen, so each face's trunk features and v1 embedding are computed once (``trunk_features``,
cached by the caller) and a head is fitted on those arrays alone. Three recipes (``HeadRecipe``):

* ``ridge``: the closed-form least-squares map of the features onto v1's embeddings of the same
  faces (ridge regression with a bias), then L2-normalised: v2(x) ~ v1(x) for every face;
* ``harmonic``: the FaceNet section 7 recipe, semi-hard triplets mined over ``[v2 rows; frozen v1
  rows]`` (``harmonic_triplet_loss``), optionally started from the ridge map and with a
  distillation term ``distill * mean ||v2(x) - v1(x)||^2`` added;
* ``plain``: the same triplet training on v2 rows only (the non-harmonic baseline).

``head_model`` puts a fitted head on the trunk as a ``MobileFaceNet(128)``: an ordinary checkpoint.

Example:
    >>> rng = np.random.default_rng(0)
    >>> feats, labels = rng.normal(size=(64, 192)).astype(np.float32), np.arange(64) // 4
    >>> old = rng.normal(size=(64, 128)).astype(np.float32)
    >>> old /= np.linalg.norm(old, axis=1, keepdims=True)
    >>> head = fit_head(feats, labels, old, HeadRecipe("ridge"))
    >>> apply_head(head, feats).shape
    (64, 128)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamproc.errors import ConfigError
from streamproc.eval.verification import best_threshold, squared_l2, val_at_far
from streamproc.models import registry
from streamproc.models.checkpoint import ModelCard
from streamproc.models.mobilefacenet import FEATURE_DIM, MobileFaceNet
from streamproc.training.harmonic import harmonic_triplet_loss
from streamproc.training.losses import TripletLoss
from streamproc.training.miners import SemiHardMiner
from streamproc.types import Crops

log = logging.getLogger(__name__)

__all__ = ["HeadRecipe", "apply_head", "calibrate", "fit_head", "head_card", "head_model", "trunk_features"]

KINDS = ("ridge", "harmonic", "plain")


@dataclass(frozen=True)
class HeadRecipe:
    """How a head is fitted; ``kind`` is one of ``KINDS``."""

    kind: str = "harmonic"
    steps: int = 300
    identities_per_batch: int = 32  # P
    images_per_identity: int = 4  # K
    lr: float = 1e-3
    margin: float = 0.2
    distill: float = 1.0  # weight of mean ||v2 - v1||^2 (harmonic only)
    ridge_init: bool = True  # start from the ridge map (harmonic only)
    alpha: float = 0.1  # ridge penalty (on unnormalised trunk features; 0.1 beat 1 and 10 cross-fitted)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"head recipe: expected one of {', '.join(KINDS)}, got {self.kind!r}")


def trunk_features(crops: Crops, batch: int = 64) -> np.ndarray:
    """(N, 192) unnormalised MobileFaceNet trunk features of pipeline crops (similarity-aligned)."""
    from streamproc.align import adapt_crops
    from streamproc.models.embedder import preprocess

    model, card = registry.load(registry.MOBILEFACENET)
    out = np.zeros((len(crops), FEATURE_DIM), np.float32)
    with torch.inference_mode():
        for start in range(0, len(crops), batch):
            part = crops[start : start + batch]
            x = adapt_crops(part.images, part.points, card.alignment, card.input_size)
            out[start : start + batch] = model.trunk_features(preprocess(x, card)).numpy()  # type: ignore[operator]
    return out


def _ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> nn.Linear:
    x = features.astype(np.float64)
    y = targets.astype(np.float64)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    head = nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w.T))
        head.bias.copy_(torch.from_numpy(my - mx @ w))
    return head


def _batches(labels: np.ndarray, recipe: HeadRecipe, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one P x K batch: P people with at least two faces, K faces each (with
    replacement when a person has fewer)."""
    people = np.unique(labels)
    counts = np.array([np.sum(labels == p) for p in people])
    eligible = people[counts >= 2]
    if len(eligible) < 2:
        raise ConfigError("head training needs at least two people with two or more faces")
    chosen = rng.choice(eligible, min(recipe.identities_per_batch, len(eligible)), replace=False)
    rows = []
    for person in chosen:
        own = np.flatnonzero(labels == person)
        k = recipe.images_per_identity
        rows.append(rng.choice(own, k, replace=len(own) < k))
    return np.concatenate(rows)


def _train(
    head: nn.Linear, features: np.ndarray, labels: np.ndarray, old: np.ndarray, recipe: HeadRecipe
) -> None:
    rng = np.random.default_rng(recipe.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=recipe.lr)
    miner, loss_fn = SemiHardMiner(recipe.margin), TripletLoss(recipe.margin)
    x_all, old_all = torch.from_numpy(features), torch.from_numpy(old)
    y_all = torch.from_numpy(np.unique(labels, return_inverse=True)[1])
    for _ in range(recipe.steps):
        rows = torch.from_numpy(_batches(labels, recipe, rng))
        new = F.normalize(head(x_all[rows]), dim=1)
        if recipe.kind == "plain":  # v2 rows only: ordinary triplet training
            loss = loss_fn(new, miner(new, y_all[rows]))[0]
        else:
            loss = harmonic_triplet_loss(new, old_all[rows], y_all[rows], miner, loss_fn).backward_loss
            if recipe.distill:
                loss = loss + recipe.distill * (new - old_all[rows]).pow(2).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def fit_head(features: np.ndarray, labels: np.ndarray, old: np.ndarray, recipe: HeadRecipe) -> nn.Linear:
    """A ``192 -> 128`` head fitted by ``recipe`` on trunk features, identity labels and the frozen
    old model's embeddings of the same faces (rows aligned)."""
    if not len(features) == len(labels) == len(old):
        raise ConfigError(f"fit_head: {len(features)} features, {len(labels)} labels, {len(old)} old rows")
    torch.manual_seed(recipe.seed)
    if recipe.kind == "ridge" or (recipe.kind == "harmonic" and recipe.ridge_init):
        head = _ridge(features, old, recipe.alpha)
    else:  # a random orthogonal projection, as a new MobileFaceNet head starts
        head = nn.Linear(features.shape[1], old.shape[1])
        nn.init.orthogonal_(head.weight)
        nn.init.zeros_(head.bias)
    if recipe.kind != "ridge":
        _train(head, features, labels, old, recipe)
    return head.eval()


def apply_head(head: nn.Linear, features: np.ndarray) -> np.ndarray:
    """The head's L2-normalised embeddings of trunk features (what the full model outputs)."""
    with torch.no_grad():
        return F.normalize(head(torch.from_numpy(features).float()), dim=1).numpy()


def head_model(head: nn.Linear) -> MobileFaceNet:
    """The pretrained MobileFaceNet trunk with ``head``: a ``MobileFaceNet(head.out_features)``."""
    trunk, _ = registry.load(registry.MOBILEFACENET)
    model = MobileFaceNet(head.out_features)
    missing, unexpected = model.load_state_dict(trunk.state_dict(), strict=False)
    if unexpected or any(not name.startswith("head.") for name in missing):
        raise ConfigError(f"the trunk does not fit MobileFaceNet: {missing} {unexpected}")
    assert model.head is not None
    model.head.load_state_dict(head.state_dict())
    return model.eval()


def _all_pairs(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and same-person flags of every ordered pair ``(a_i, b_j)``, ``i != j``."""
    i, j = np.nonzero(~np.eye(len(labels), dtype=bool))
    return squared_l2(a[i], b[j]), labels[i] == labels[j]


def _balanced_threshold(dist: np.ndarray, same: np.ndarray, seed: int = 0) -> float:
    """The best-accuracy threshold over as many different-person pairs as same-person ones (drawn
    at random), as in LFW's pairs: over all pairs the rare same pairs would not count."""
    rng = np.random.default_rng(seed)
    diff = rng.choice(np.flatnonzero(~same), min(int(same.sum()), int((~same).sum())), replace=False)
    keep = np.concatenate([np.flatnonzero(same), diff])
    return best_threshold(dist[keep], same[keep])


def calibrate(
    new: np.ndarray, old: np.ndarray, labels: np.ndarray, version: str, old_version: str, far: float = 1e-3
) -> dict[str, Any]:
    """Card fields measured on faces of people the head never saw: ``thresholds`` (own version:
    best accuracy on balanced pairs, like v1's card; the pairs with ``old_version`` in both directions: at ``far``, as
    ``eval compat --write`` records them), the 1:1 impostor curve ``far_thresholds`` at the FARs the
    pair count can resolve, and ``metrics``."""
    own, own_same = _all_pairs(new, new, labels)
    mixed, mixed_same = _all_pairs(new, old, labels)
    back, back_same = _all_pairs(old, new, labels)
    impostors = int(np.sum(~own_same))
    curve = {f"{f:.0e}".replace("e-0", "e-"): val_at_far(own, own_same, f)[1] for f in (1e-2, 1e-3, 1e-4)}
    curve = {k: round(t, 4) for k, t in curve.items() if impostors * float(k) >= 1}
    thresholds = {
        version: round(_balanced_threshold(own, own_same), 4),
        old_version: round(val_at_far(mixed, mixed_same, far)[1], 4),
        f"as-gallery:{old_version}": round(val_at_far(back, back_same, far)[1], 4),
    }
    metrics = {
        "people": len(np.unique(labels)),
        "faces": len(labels),
        f"val_at_far_{far:g}_{version}_vs_{old_version}": val_at_far(mixed, mixed_same, far)[0],
        f"val_at_far_{far:g}_{version}": val_at_far(own, own_same, far)[0],
    }
    return {"thresholds": thresholds, "far_thresholds": curve, "metrics": metrics}


def head_card(
    name: str, version: str, old_version: str, fields: dict[str, Any], recipe: HeadRecipe
) -> ModelCard:
    """The card of a ``head_model``: the trunk's input contract, compatible with ``old_version``."""
    trunk = registry.peek_card(registry.MOBILEFACENET)
    return ModelCard(
        name=name,
        version=version,
        arch=trunk.arch,
        embedding_dim=128,
        input_size=trunk.input_size,
        normalisation=trunk.normalisation,
        mean=trunk.mean,
        std=trunk.std,
        alignment=trunk.alignment,
        compatible_with=(version, old_version),
        parent=trunk.key,
        provenance={"recipe": dataclasses.asdict(recipe), "trunk": trunk.key},
        licence=trunk.licence,
        **fields,
    )
