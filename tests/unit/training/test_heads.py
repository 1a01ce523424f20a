"""Heads fitted on cached trunk features: the ridge map, the triplet recipes and the card's calibration."""

from __future__ import annotations

import numpy as np
import pytest

from streamproc.errors import ConfigError
from streamproc.training.heads import HeadRecipe, apply_head, calibrate, fit_head


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _faces(
    people: int, per: int, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trunk-like features and old embeddings of ``people`` identities: one centre per person plus
    noise, and the old model a fixed linear map of the same features."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(people), per)
    features = (rng.normal(size=(people, 192))[labels] + noise * rng.normal(size=(len(labels), 192))).astype(
        np.float32
    )
    old = _unit(features @ rng.normal(size=(192, 128)))
    return features, labels, old


def test_ridge_recovers_a_linear_old_model() -> None:
    features, labels, old = _faces(40, 4)
    mapped = apply_head(fit_head(features, labels, old, HeadRecipe("ridge", alpha=1e-3)), features)
    assert np.abs(mapped - old).max() < 0.05


@pytest.mark.parametrize("kind", ["harmonic", "plain"])
def test_triplet_recipes_lower_the_mixed_or_own_distance_of_same_people(kind: str) -> None:
    features, labels, old = _faces(40, 4, noise=2.0)  # people overlap: the random head mixes them up
    recipe = HeadRecipe(kind, steps=30, ridge_init=False, distill=0.0)
    random_start = apply_head(
        fit_head(features, labels, old, HeadRecipe(kind, steps=0, ridge_init=False)), features
    )
    trained = apply_head(fit_head(features, labels, old, recipe), features)
    other = old if kind == "harmonic" else None

    def gap(emb: np.ndarray) -> float:  # mean impostor minus mean genuine squared distance
        ref = emb if other is None else other
        d = ((emb[:, None] - ref[None]) ** 2).sum(-1)
        same = labels[:, None] == labels[None]
        np.fill_diagonal(same, False)
        return float(d[~same & ~np.eye(len(labels), dtype=bool)].mean() - d[same].mean())

    assert gap(trained) > gap(random_start) + 0.1


def test_calibrate_orders_thresholds_and_keeps_only_resolvable_fars() -> None:
    features, labels, old = _faces(20, 3)
    head = fit_head(features, labels, old, HeadRecipe("ridge"))
    fields = calibrate(apply_head(head, features), old, labels, "v2", "v1")
    assert set(fields["thresholds"]) == {"v2", "v1", "as-gallery:v1"}
    # 60 faces: 3,420 ordered impostor pairs resolve FAR 1e-2 and 1e-3, not 1e-4
    assert list(fields["far_thresholds"]) == ["1e-2", "1e-3"]
    assert fields["far_thresholds"]["1e-3"] <= fields["far_thresholds"]["1e-2"]
    assert fields["metrics"]["people"] == 20


def test_unknown_recipe_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ridge, harmonic, plain"):
        HeadRecipe("lasso")
