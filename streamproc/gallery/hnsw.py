"""Approximate candidates for large galleries: a faiss HNSW graph over unit rows.

Every row is a node of a navigable small-world graph (``m`` links a node, built with
``ef_construction``); a search walks the graph from the top layer down, keeping the ``ef_search`` best
nodes seen, and returns the ids of the best. ``GalleryIndex`` re-ranks them exactly against its own rows.
Unlike IVF there are no cells to train, so the graph never grows stale as the gallery grows.

* ``storage="flat"``: the nodes hold float32 rows; ``"sq8"``: 8-bit scalar codes (trained on the rows).
* faiss cannot take a node out of a graph. A removed row is cleared in an ``alive`` bitmap that the
  search filters with (faiss ``IDSelectorBitmap``): the walk still passes through the node but never
  returns it, so an erasure is immediate. ``needs_rebuild`` says when the dead nodes are
  ``REBUILD_DEAD`` of the graph, and ``GalleryIndex`` then rebuilds from its live rows.
* Nodes are numbered in insertion order (``label``); ``_rids`` maps a label to the caller's id.
* The level-0 links are pruned as the graph grows, which can leave a node that no walk from the entry
  point reaches: searched with its own row, such a node did not come back (with ``m=8``, one node in
  22 of 1,000 builds of 600 face-like rows). After each change the graph is walked breadth-first from
  its entry point, and the nodes it misses are compared with every probe exactly, beside the walk.
  A probe's walk starts where the upper layers lead it; a node that start cannot reach but the
  entry point can is not covered.

>>> rows = np.eye(4, 8, dtype=np.float32)
>>> ann = HnswIndex.build(rows, np.arange(10, 14), HnswOptions(m=4))
>>> ann.search(rows[:2], 1).tolist()
[[10], [11]]
>>> ann.remove(np.array([10])), 10 in ann.search(rows[:1], 3)
(1, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import faiss
import numpy as np

REBUILD_DEAD = 0.25  # rebuild once this share of the graph's nodes were removed


def unreachable(hnsw: Any, n: int) -> np.ndarray:  # faiss.HNSW: the stubs miss its arrays
    """Labels of the nodes a level-0 walk from the graph's entry point can never reach."""
    if n == 0:
        return np.zeros(0, np.int64)
    starts = faiss.vector_to_array(hnsw.offsets)[:n].astype(np.int64)
    links = faiss.vector_to_array(hnsw.neighbors)
    level0 = links[starts[:, None] + np.arange(hnsw.nb_neighbors(0))]  # (n, 2m), -1 pads
    level0[level0 < 0] = hnsw.entry_point  # a pad leads back to the start, seen already
    seen = np.zeros(n, bool)
    frontier = np.array([hnsw.entry_point], np.int64)
    seen[frontier] = True
    while len(frontier):
        reached = np.zeros(n, bool)
        reached[level0[frontier].ravel()] = True
        frontier = np.flatnonzero(reached & ~seen)
        seen[frontier] = True
    return np.flatnonzero(~seen)


@dataclass(frozen=True)
class HnswOptions:
    """Graph settings (see ``GalleryConfig.ann_hnsw_*``)."""

    m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    storage: Literal["flat", "sq8"] = "flat"
    threads: int = 1
    pq_m: int = 32  # PqScanIndex, IvfPqScanIndex: 4-bit sub-quantizers a row
    nlist: int = 0  # IvfPqScanIndex: k-means cells (0: sqrt(rows))
    ivf_share: float = 0.375  # IvfPqScanIndex: share of the cells a probe scans


def _graph(dim: int, options: HnswOptions, rows: np.ndarray) -> faiss.IndexHNSW:
    if options.storage == "sq8":
        index: faiss.IndexHNSW = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, options.m)  # type: ignore[arg-type]  # the stubs miss this overload
        sample = rows[np.random.default_rng(0).choice(len(rows), min(len(rows), 100_000), replace=False)]
        index.train(np.ascontiguousarray(sample, np.float32))
    else:
        index = faiss.IndexHNSWFlat(dim, options.m)
    index.hnsw.efConstruction = options.ef_construction
    return index


class HnswIndex:
    """Candidate ids of the rows nearest to probes; ids are any non-negative int64 chosen by the caller.

    Example:
        >>> ann = HnswIndex.build(rows, ids, HnswOptions())   # doctest: +SKIP
        >>> ann.remove(ids[:1]); ann.search(probes, 32)        # doctest: +SKIP
    """

    faiss_type: type = faiss.IndexHNSW  # what ``read`` accepts

    def __init__(self, index: faiss.Index, options: HnswOptions, rids: np.ndarray, alive: np.ndarray):
        self._index = index
        self.options = options
        self.ef_search = options.ef_search
        self._rids = rids  # label -> caller id (capacity >= ntotal)
        self._alive = alive  # bit per label, little-endian within a byte
        self._label = np.full(0, -1, np.int64)  # caller id -> label (-1: none)
        live = np.unpackbits(alive, bitorder="little")[: len(self)].astype(bool)
        self._index_labels(np.flatnonzero(live))
        self.dead = len(self) - int(live.sum())  # removed nodes still in the graph
        self._stranded: np.ndarray | None = None  # unreachable labels; None: not walked since a change
        self._stranded_rows = np.zeros((0, index.d), np.float32)  # their stored rows

    @classmethod
    def build(cls, rows: np.ndarray, ids: np.ndarray, options: HnswOptions) -> Self:
        """A graph of ``rows`` (float32 unit rows) under ``ids``."""
        faiss.omp_set_num_threads(options.threads)
        out = cls(
            cls._make(rows.shape[1], options, rows), options, np.zeros(0, np.int64), np.zeros(0, np.uint8)
        )
        out.add(rows, ids)
        return out

    @staticmethod
    def _make(dim: int, options: HnswOptions, rows: np.ndarray) -> faiss.Index:
        return _graph(dim, options, rows)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def trained_for(self) -> int:
        return len(self)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored rows or codes, the links and the id maps."""
        code = 4 * self._index.d if self.options.storage == "flat" else self._index.d
        links = 4 * 2 * self.options.m * 1.05  # layer 0 has 2m links; the upper layers ~5% more
        return int(len(self) * (code + links)) + self._rids.nbytes + self._label.nbytes + self._alive.nbytes

    def needs_rebuild(self, rows: int) -> bool:
        """Whether removed nodes are ``REBUILD_DEAD`` of the graph (``rows``: live rows, unused)."""
        return self.dead > REBUILD_DEAD * max(len(self), 1)

    def _index_labels(self, labels: np.ndarray) -> None:
        rids = self._rids[labels]
        if len(rids) and rids.max() >= len(self._label):
            grown = np.full(max(int(rids.max()) + 1, 2 * len(self._label)), -1, np.int64)
            grown[: len(self._label)] = self._label
            self._label = grown
        self._label[rids] = labels

    def add(self, rows: np.ndarray, ids: np.ndarray) -> None:
        if not len(rows):
            return
        first, stop = len(self), len(self) + len(rows)
        if stop > len(self._rids):
            cap = max(stop, 2 * len(self._rids), 1024)
            self._rids = np.concatenate([self._rids, np.zeros(cap - len(self._rids), np.int64)])
            self._alive = np.concatenate([self._alive, np.zeros(cap // 8 + 1 - len(self._alive), np.uint8)])
        self._rids[first:stop] = ids
        labels = np.arange(first, stop, dtype=np.int64)
        np.bitwise_or.at(self._alive, labels >> 3, (1 << (labels & 7)).astype(np.uint8))
        self._index_labels(labels)
        faiss.omp_set_num_threads(self.options.threads)
        self._index.add(np.ascontiguousarray(rows, np.float32))
        self._stranded = None

    def remove(self, ids: np.ndarray) -> int:
        """Hide every node with one of ``ids`` from searches; returns how many were hidden."""
        ids = np.unique(np.asarray(ids, np.int64))
        ids = ids[(ids >= 0) & (ids < len(self._label))]
        labels = self._label[ids]
        labels = labels[labels >= 0]
        self._label[self._rids[labels]] = -1
        np.bitwise_and.at(self._alive, labels >> 3, ~(1 << (labels & 7)).astype(np.uint8))
        self.dead += len(labels)
        return len(labels)

    def search(self, probes: np.ndarray, k: int) -> np.ndarray:
        """``(B, k)`` ids of the best live nodes the walk found, best first; -1 pads."""
        faiss.omp_set_num_threads(self.options.threads)
        selector = (
            faiss.IDSelectorBitmap(len(self._alive), faiss.swig_ptr(self._alive)) if self.dead else None
        )
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))  # type: ignore[attr-defined]  # not in the stubs
        if selector is not None:
            params.sel = selector
        probes = np.ascontiguousarray(probes, np.float32)
        dist, labels = self._index.search(probes, k, params=params)
        labels = self._merge_stranded(probes, np.where(labels >= 0, dist, np.inf), labels, k)
        return np.where(labels >= 0, self._rids[np.maximum(labels, 0)], -1)

    def _merge_stranded(self, probes: np.ndarray, dist: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
        """``labels`` with the live nodes no walk reaches merged in by their exact distance."""
        if self._stranded is None:
            self._stranded = unreachable(self._index.hnsw, len(self))  # type: ignore[attr-defined]  # an IndexHNSW
            self._stranded_rows = self._index.reconstruct_batch(self._stranded)
        live = (self._alive[self._stranded >> 3] >> (self._stranded & 7) & 1) == 1
        if not live.any():
            return labels
        stranded, rows = self._stranded[live], self._stranded_rows[live]
        extra = (probes**2).sum(1)[:, None] + (rows**2).sum(1)[None] - 2 * probes @ rows.T
        extra[(labels[:, :, None] == stranded).any(1)] = np.inf  # the walk started on it: already there
        dist = np.concatenate([dist, extra], axis=1)
        labels = np.concatenate([labels, np.broadcast_to(stranded, extra.shape)], axis=1)
        best = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return np.where(
            np.isfinite(np.take_along_axis(dist, best, 1)), np.take_along_axis(labels, best, 1), -1
        )

    def save(self, path: Path) -> None:
        """The graph to ``path``; the id map and bitmap to ``path`` + ``.ids.npz``."""
        faiss.write_index(self._index, str(path))
        with open(f"{path}.ids.npz", "wb") as fh:
            np.savez(fh, rids=self._rids[: len(self)], alive=self._alive)

    @classmethod
    def read(cls, path: Path, options: HnswOptions) -> Self:
        index = faiss.read_index(str(path))
        if not isinstance(index, cls.faiss_type):
            raise ValueError(f"{path}: not a {cls.faiss_type.__name__}")
        with np.load(f"{path}.ids.npz", allow_pickle=False) as saved:
            rids, alive = saved["rids"], saved["alive"]
        if len(rids) != index.ntotal or len(alive) * 8 < len(rids):
            raise ValueError(f"{path}: {index.ntotal} nodes, {len(rids)} ids")
        return cls(index, options, rids, alive)
