"""Approximate candidates for large galleries: 4-bit PQ fast-scan codes in k-means cells (faiss
``IndexIVFPQFastScan``), the default.

k-means, trained on a sample of at most 100k rows, splits the rows into ``nlist`` cells (about
sqrt(rows): 1,000 at 1M); each row is stored in its cell as ``pq_m`` 4-bit codes of the row itself
(not of its offset from the cell's centre, ``by_residual = False``: one set of look-up tables serves
every cell, so scanning many cells costs little more than scanning their codes). A probe scans the
``ceil(ivf_share * nlist)`` cells nearest to it with the fast-scan kernel of ``PqScanIndex`` and
``GalleryIndex`` re-ranks the best ``candidates`` exactly. At 1M, scanning 37.5% of the cells (about
that share of the codes a full ``PqScanIndex`` scan reads) kept recall@1 at 0.9961 on the LFW mix
(``bench/gallery_search.py``): a true neighbour is lost only when it lies in an unscanned cell.

Removal, the id maps and the files are those of ``PqScanIndex``: a removed row is cleared in the live
bitmap and over-fetched past, so an erasure is immediate. ``needs_rebuild`` says when a quarter of the
rows are dead or the gallery grew ``REBUILD_GROWTH`` times past the size the cells were trained on.

>>> rows = np.eye(4, 8, dtype=np.float32)
>>> ann = IvfPqScanIndex.build(rows, np.arange(10, 14), HnswOptions(pq_m=4, nlist=2, ivf_share=1.0))
>>> ann.nlist, ann.nprobe, ann.search(rows[:1], 1).tolist()
(2, 2, [[10]])
>>> ann.remove(np.array([10])), 10 in ann.search(rows[:1], 3)
(1, False)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Self

import faiss
import numpy as np

from streamproc.gallery.hnsw import HnswOptions
from streamproc.gallery.pqscan import PqScanIndex, train_sample

REBUILD_GROWTH = 4.0  # rebuild once the gallery is this many times the size the cells were trained on


def cells_for(rows: int, nlist: int = 0) -> int:
    """k-means cells for ``rows``: ``nlist`` when set, else sqrt(rows); never more than the rows.

    >>> cells_for(1_000_000), cells_for(1_000_000, 4096), cells_for(5, 16)
    (1000, 4096, 5)
    """
    return max(1, min(nlist or round(math.sqrt(rows)), rows))


class IvfPqScanIndex(PqScanIndex):
    """Candidate ids of the rows nearest to probes, from the cells nearest to them; ids chosen by the caller.

    Example:
        >>> ann = IvfPqScanIndex.build(rows, ids, HnswOptions(ivf_share=0.375))   # doctest: +SKIP
        >>> ann.remove(ids[:1]); ann.search(probes, 32)                            # doctest: +SKIP
    """

    faiss_type = faiss.IndexIVFPQFastScan
    qbs = 0  # faiss's default: the IVF kernel groups probes by cell itself

    def __init__(
        self,
        index: faiss.Index,
        options: HnswOptions,
        rids: np.ndarray,
        alive: np.ndarray,
        trained_for: int | None = None,
    ):
        super().__init__(index, options, rids, alive)
        self._trained = len(self) if trained_for is None else trained_for
        self.nprobe = math.ceil(options.ivf_share * self.nlist)

    @classmethod
    def build(cls, rows: np.ndarray, ids: np.ndarray, options: HnswOptions) -> Self:
        out = super().build(rows, ids, options)
        out._trained = len(rows)
        return out

    @staticmethod
    def _make(dim: int, options: HnswOptions, rows: np.ndarray) -> faiss.Index:
        nlist = cells_for(len(rows), options.nlist)
        index = faiss.IndexIVFPQFastScan(faiss.IndexFlatL2(dim), dim, nlist, options.pq_m, 4)
        index.by_residual = False
        index.cp.min_points_per_centroid = 1  # small galleries: no warning, the cells are just small
        index.train(train_sample(rows, max(16, nlist)))
        return index

    @classmethod
    def read(cls, path: Path, options: HnswOptions, trained_for: int | None = None) -> Self:
        """An index written by ``save``; ``trained_for``: the rows it was built with (default: its size)."""
        out = super().read(path, options)
        out._trained = len(out) if trained_for is None else trained_for
        return out

    @property
    def trained_for(self) -> int:
        return self._trained

    @property
    def nlist(self) -> int:
        return int(faiss.extract_index_ivf(self._index).nlist)

    @property
    def nprobe(self) -> int:
        """Cells scanned per probe, at least 1 and at most ``nlist``."""
        return int(faiss.extract_index_ivf(self._index).nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        faiss.extract_index_ivf(self._index).nprobe = max(1, min(int(value), self.nlist))

    @property
    def nbytes(self) -> int:
        """Bytes of the codes, the cells' ids and centres, and the id maps."""
        return super().nbytes + 8 * len(self) + 4 * self.nlist * self._index.d

    def needs_rebuild(self, rows: int) -> bool:
        """Whether a quarter of the rows are dead or the gallery (``rows``) outgrew the cells."""
        return super().needs_rebuild(rows) or rows > REBUILD_GROWTH * self._trained
