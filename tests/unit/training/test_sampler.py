"""PKSampler: P x K composition, determinism, disjoint and covering worker shards; augmentation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streamproc.training.config import AugmentConfig
from streamproc.training.data import PKSampler, augment


def make_labels(sizes: list[int]) -> np.ndarray:
    """Labels of a dataset whose identity ``i`` has ``sizes[i]`` images (rows grouped by identity)."""
    return np.repeat(np.arange(len(sizes)), sizes)


LABELS = make_labels([5, 2, 8, 4, 1, 6, 3, 4])


@pytest.mark.parametrize(("p", "k"), [(2, 2), (4, 3), (6, 4)])
def test_batch_is_p_identities_times_k_images(p: int, k: int) -> None:
    sampler = PKSampler(LABELS, identities=p, per_identity=k, seed=0)
    for step in range(20):
        batch = sampler.global_batch(step)
        assert len(batch) == p * k == sampler.batch_size
        blocks = LABELS[batch].reshape(p, k)
        assert (blocks == blocks[:, :1]).all(), "K consecutive rows per identity"
        assert len(set(blocks[:, 0].tolist())) == p, "P distinct identities"
        assert 4 not in blocks, "an identity with one image has no positive and is never drawn"


def test_identities_with_enough_images_are_drawn_without_replacement() -> None:
    sampler = PKSampler(LABELS, identities=4, per_identity=3, seed=0)
    for step in range(50):
        for block in sampler.global_batch(step).reshape(4, 3):
            if Counter(LABELS.tolist())[int(LABELS[block[0]])] >= 3:
                assert len(set(block.tolist())) == 3


@pytest.mark.parametrize(
    ("small", "eligible"),
    [("replace", {0, 1, 2, 3, 5, 6, 7}), ("skip", {0, 2, 3, 5, 7})],
)
def test_small_identities(small: str, eligible: set[int]) -> None:
    sampler = PKSampler(LABELS, identities=3, per_identity=4, seed=0, small=small)
    drawn = {int(label) for step in range(200) for label in LABELS[sampler.global_batch(step)]}
    assert drawn == eligible


def test_deterministic_in_seed_and_step() -> None:
    a = PKSampler(LABELS, 3, 2, seed=7)
    b = PKSampler(LABELS, 3, 2, seed=7)
    assert all(np.array_equal(a.global_batch(s), b.global_batch(s)) for s in (0, 5, 99))
    assert np.array_equal(a.global_batch(5), a.global_batch(5)), "a step can be replayed (resume)"
    assert not all(
        np.array_equal(a.global_batch(s), PKSampler(LABELS, 3, 2, seed=8).global_batch(s)) for s in range(5)
    )
    assert not np.array_equal(a.global_batch(0), a.global_batch(1))


@pytest.mark.parametrize("world", [1, 2, 3, 6])
def test_worker_shards_are_disjoint_and_cover_the_batch(world: int) -> None:
    sampler = PKSampler(LABELS, identities=3, per_identity=4, seed=0)
    positions = np.arange(12)
    shards = [sampler.shard(positions, rank, world) for rank in range(world)]
    assert all(len(s) == 12 // world for s in shards)
    assert np.array_equal(np.concatenate(shards), positions), "rank order rebuilds the global batch"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"identities": 8, "per_identity": 2}, "only 7 identities"),
        ({"identities": 6, "per_identity": 4, "small": "skip"}, "only 5 identities"),
        ({"identities": 2, "per_identity": 2, "small": "maybe"}, "small"),
    ],
)
def test_invalid_samplers(kwargs: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        PKSampler(LABELS, **kwargs)


def test_shard_needs_an_equal_split() -> None:
    with pytest.raises(ValueError, match="equal share"):
        PKSampler(LABELS, 3, 2).shard(np.arange(6), rank=0, world_size=4)


def test_augmentation_does_not_depend_on_the_worker() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    config = AugmentConfig(jitter_px=3, jpeg_prob=0.5, downscale_prob=0.5, downscale_min_px=12)
    whole = augment(crops, np.arange(8), step=3, seed=1, config=config)
    halves = [
        augment(crops[s], np.arange(8)[s], step=3, seed=1, config=config) for s in (slice(0, 4), slice(4, 8))
    ]
    assert np.array_equal(whole, np.concatenate(halves))
    assert whole.shape == crops.shape and whole.dtype == np.uint8
    assert not np.array_equal(whole, crops)
    assert not np.array_equal(whole, augment(crops, np.arange(8), step=4, seed=1, config=config))


def test_augmentation_off_is_identity() -> None:
    crops = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    config = AugmentConfig(flip=False, jitter_px=0)
    assert np.array_equal(augment(crops, np.arange(3), step=0, seed=0, config=config), crops)
