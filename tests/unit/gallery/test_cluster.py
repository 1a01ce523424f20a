"""Agglomerative clustering of unknown faces over hand-placed embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamproc.errors import InputError
from streamproc.gallery.cluster import agglomerate, cluster_unknowns, promote
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.memory import MemoryGalleryStore


def unit_vectors(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def around(centre: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    x = centre[None, :] + noise * unit_vectors(n, len(centre), seed)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(sizes: list[int], noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    centres = unit_vectors(len(sizes), seed=seed)  # random 64-D centres: squared distance ~2 apart
    emb = np.concatenate([around(centres[i], n, noise, seed + 10 + i) for i, n in enumerate(sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return emb, truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])))


@pytest.mark.parametrize("method", ["average", "complete", "single"])
@pytest.mark.parametrize("sizes", [[5, 3, 1], [1, 1], [10], [4, 4, 4, 4]])
def test_blobs_are_recovered(method: Any, sizes: list[int]) -> None:
    emb, truth = blobs(sizes)
    labels = agglomerate(emb, threshold=0.5, method=method)
    assert same_partition(labels, truth)
    assert labels[0] == 0 and set(labels.tolist()) == set(range(len(sizes)))  # first-appearance order


@pytest.mark.parametrize(
    "threshold, expected",
    [(0.01, [0, 1, 2]), (0.3, [0, 0, 1]), (3.9, [0, 0, 0])],
)
def test_threshold_is_a_squared_l2_distance(threshold: float, expected: list[int]) -> None:
    # squared distances: a-b 0.02, a-c 2.0, b-c ~1.8
    emb = np.array([[1.0, 0.0], [0.99, 0.14106736], [0.0, 1.0]], np.float32)
    assert agglomerate(emb, threshold).tolist() == expected


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n: int) -> None:
    assert agglomerate(unit_vectors(n), 0.5).tolist() == [0] * n


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0.0}, {"threshold": -1.0}, {"threshold": 0.5, "method": "ward"}],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        agglomerate(unit_vectors(3), **kwargs)


def store_of_unknowns(emb: np.ndarray) -> tuple[MemoryGalleryStore, list[str]]:
    """A gallery holding only the unknown faces ``emb`` (row i has metadata ``{"n": i}``); their ids."""
    store = MemoryGalleryStore()
    ids = [store.add_unknown(row, "v1", {"n": i}) for i, row in enumerate(emb)]
    return store, ids


def test_cluster_unknowns_keeps_groups_of_min_size_largest_first() -> None:
    emb, _ = blobs([2, 6, 1, 3])
    store, ids = store_of_unknowns(emb)
    clusters = cluster_unknowns(store, "v1", GalleryConfig(cluster_threshold=0.5))
    assert [c.size for c in clusters] == [6, 3, 2]
    assert clusters[0].members == ids[2:8]
    assert clusters[0].meta[0]["n"] == 2
    assert np.linalg.norm(clusters[0].centroid) == pytest.approx(1.0, abs=1e-5)
    assert 0 < clusters[0].spread < 0.1
    identity = promote(store, clusters[1], "Grace")
    assert identity.embeddings == {"v1": 3} and clusters[1].members == ids[9:12]
    np.testing.assert_allclose(store.embeddings("Grace", "v1"), emb[9:12], atol=1e-6)
    assert store.unknowns("v1").ids == ids[:9]  # the promoted faces are no longer unknown


def test_only_the_most_recent_unknowns_are_clustered() -> None:
    emb, _ = blobs([4, 4])
    store, ids = store_of_unknowns(emb)
    cfg = GalleryConfig(cluster_threshold=0.5, cluster_max_unknowns=5)
    clusters = cluster_unknowns(store, "v1", cfg, min_size=1)
    assert sorted(m for c in clusters for m in c.members) == ids[3:8]
