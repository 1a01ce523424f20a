"""Approximate candidates for large galleries: every row as a 4-bit product-quantizer code, all scanned.

Each row is cut into ``pq_m`` sub-vectors and each stored as the nearest of 16 centroids (4 bits: 16
bytes a row at ``pq_m=32``); faiss's fast-scan kernel scores a batch of probes against all codes with
SIMD table look-ups held in registers. Nothing is skipped, so unlike a graph walk or IVF cells the
true neighbour cannot be lost on the way, only ranked a little too low by the coarse codes;
``GalleryIndex`` re-ranks the best ``candidates`` exactly. On random-like 128-D rows at 1M, where an
HNSW walk missed the nearest row for 13% of probes at ``ef_search=256``, this scan found it for every
probe in the top 32 (``bench/gallery_search.py``). Training (k-means over a 100k-row sample) and adding
1M rows take seconds, so a rebuild is cheap.

The kernel scores probes in blocks: ``qbs = 0x4444`` makes it walk the codes once per 16 probes (four
register-held groups of four) instead of faiss's own choice for the batch size (README, "Large
galleries", has the before and after at 1M).

Removal works as in ``HnswIndex`` (a bitmap of live codes, the same id maps and files): the fast-scan
search takes no filter, so it asks for ``k`` more than needed while there are removed codes and drops
those before returning.

>>> rows = np.eye(4, 8, dtype=np.float32)
>>> ann = PqScanIndex.build(rows, np.arange(10, 14), HnswOptions(pq_m=4))
>>> ann.remove(np.array([10])), 10 in ann.search(rows[:1], 3)
(1, False)
"""

from __future__ import annotations

import faiss
import numpy as np

from streamproc.gallery.hnsw import HnswIndex, HnswOptions

_TRAIN_ROWS = 100_000


def train_sample(rows: np.ndarray, least: int = 16) -> np.ndarray:
    """At most ``_TRAIN_ROWS`` of ``rows`` (float32, contiguous), repeated up to ``least`` rows when
    fewer: k-means needs a point per centroid (16 for 4-bit codes), a tiny gallery's rows are reused."""
    pick = np.random.default_rng(0).choice(len(rows), min(len(rows), _TRAIN_ROWS), replace=False)
    sample = rows[np.sort(pick)]
    if len(sample) < least:
        sample = np.resize(sample, (least, rows.shape[1]))
    return np.ascontiguousarray(sample, np.float32)


class PqScanIndex(HnswIndex):
    """Candidate ids of the rows nearest to probes by 4-bit PQ codes; ids chosen by the caller.

    Example:
        >>> ann = PqScanIndex.build(rows, ids, HnswOptions(pq_m=32))   # doctest: +SKIP
        >>> ann.search(probes, 32)                                     # doctest: +SKIP
    """

    faiss_type: type = faiss.IndexPQFastScan
    qbs = 0x4444  # probes the kernel scores per walk over the codes: 4 groups of 4 (0: faiss's default)

    def __init__(self, index: faiss.Index, options: HnswOptions, rids: np.ndarray, alive: np.ndarray):
        super().__init__(index, options, rids, alive)
        index.qbs = self.qbs  # type: ignore[attr-defined]  # also on read: older files hold the default

    @staticmethod
    def _make(dim: int, options: HnswOptions, rows: np.ndarray) -> faiss.Index:
        index = faiss.IndexPQFastScan(dim, options.pq_m, 4)
        index.train(train_sample(rows))
        return index

    @property
    def nbytes(self) -> int:
        """Bytes of the codes and the id maps."""
        return (
            len(self) * self.options.pq_m // 2 + self._rids.nbytes + self._label.nbytes + self._alive.nbytes
        )

    def search(self, probes: np.ndarray, k: int) -> np.ndarray:
        """``(B, k)`` ids of the live rows with the best code scores, best first; -1 pads."""
        faiss.omp_set_num_threads(self.options.threads)
        extra = min(self.dead, k)  # removed codes near a probe would otherwise take candidate places
        _, labels = self._index.search(np.ascontiguousarray(probes, np.float32), k + extra)
        safe = np.maximum(labels, 0)
        live = (labels >= 0) & ((self._alive[safe >> 3] >> (safe & 7)) & 1).astype(bool)
        order = np.argsort(~live, axis=1, kind="stable")[:, :k]  # live first, in score order
        kept = np.take_along_axis(labels, order, 1)
        return np.where(np.take_along_axis(live, order, 1), self._rids[np.maximum(kept, 0)], -1)
