"""Grouping unknown faces (FaceNet paper, section 5.8) and promoting a group to an identity.

Faces the matcher could not identify are stored with ``GalleryStore.add_unknown``. Agglomerative
clustering on squared L2 distances merges groups while their linkage distance stays below
``cluster_threshold`` (``average`` linkage by default: the mean distance between the members of the two
groups; ``complete`` is stricter, ``single`` chains). The pairwise distance matrix takes
``8 * N * (N - 1) / 2`` bytes, so at most ``cluster_max_unknowns`` of the most recent faces are clustered
at once (5,000 -> 100 MB).

>>> emb = np.array([[1, 0], [0.99, 0.141], [0, 1]], np.float32)
>>> agglomerate(emb, threshold=0.1).tolist()
[0, 0, 1]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from streamproc.errors import InputError
from streamproc.gallery.base import GalleryStore, Identity
from streamproc.gallery.config import GalleryConfig

log = logging.getLogger(__name__)
Linkage = Literal["average", "complete", "single"]


@dataclass(frozen=True)
class Cluster:
    """A group of unknown faces that look like one person.

    ``members`` are unknown-face ids (oldest first), ``centroid`` their renormalised mean and ``spread``
    the mean squared distance of the members to it.

    Example:
        >>> Cluster("facenet-v1", ["a", "b"], np.array([1.0, 0.0], np.float32), 0.1).size
        2
    """

    model_version: str
    members: list[str]
    centroid: np.ndarray
    spread: float
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.members)


def agglomerate(embeddings: np.ndarray, threshold: float, method: Linkage = "average") -> np.ndarray:
    """Cluster labels ``0..C-1`` (in order of first appearance) for ``(N, D)`` unit rows."""
    emb = np.asarray(embeddings, np.float64)
    if emb.ndim != 2:
        raise InputError(f"agglomerate: expected an (N, D) array, got shape {emb.shape}")
    if threshold <= 0:
        raise InputError(f"agglomerate: expected a positive distance threshold, got {threshold}")
    if method not in ("average", "complete", "single"):
        raise InputError(f"agglomerate: expected linkage average, complete or single, got {method!r}")
    if len(emb) < 2:
        return np.zeros(len(emb), np.int64)
    tree = linkage(pdist(emb, "sqeuclidean"), method=method)
    raw = fcluster(tree, t=threshold, criterion="distance")
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # relabel by first appearance: stable, readable labels
    return rank[inverse].astype(np.int64)


def cluster_unknowns(
    store: GalleryStore,
    model_version: str,
    config: GalleryConfig | None = None,
    *,
    min_size: int = 2,
) -> list[Cluster]:
    """Clusters of at least ``min_size`` stored unknown faces, largest first."""
    cfg = config or GalleryConfig()
    unknowns = store.unknowns(model_version)
    ids, emb, meta = unknowns.ids, unknowns.embeddings, unknowns.meta
    if len(ids) > cfg.cluster_max_unknowns:
        log.warning(
            "clustering the %d most recent of %d unknown faces (cluster_max_unknowns)",
            cfg.cluster_max_unknowns,
            len(ids),
        )
        keep = slice(len(ids) - cfg.cluster_max_unknowns, None)  # ids sort by time
        ids, emb, meta = ids[keep], emb[keep], meta[keep]
    labels = agglomerate(emb, cfg.cluster_threshold, cfg.cluster_linkage)
    clusters = []
    for label in range(int(labels.max()) + 1 if len(labels) else 0):
        rows = np.flatnonzero(labels == label)
        if len(rows) < min_size:
            continue
        mean = emb[rows].mean(axis=0)
        centroid = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        spread = float(np.mean(np.sum((emb[rows] - centroid) ** 2, axis=1)))
        clusters.append(
            Cluster(model_version, [ids[i] for i in rows], centroid, spread, [meta[i] for i in rows])
        )
    return sorted(clusters, key=lambda c: -c.size)


def promote(
    store: GalleryStore, cluster: Cluster, name: str, metadata: dict[str, Any] | None = None
) -> Identity:
    """Enrol the cluster's faces as ``name`` (new, or added to an existing person) and forget them."""
    return store.promote_unknowns(cluster.members, name, cluster.model_version, metadata)
