"""Approximate candidates for large galleries, chosen by ``AnnOptions.kind``: 4-bit PQ codes in k-means
cells, the nearest cells scanned (``ivfpq.py``, the default), a full scan of such codes (``pqscan.py``),
an HNSW graph (``hnsw.py``) or a faiss inverted-file (IVF) index over unit rows; ``build_ann`` /
``read_ann``.

IVF:

k-means, trained on a sample of the gallery, splits the rows into ``nlist`` cells; a search scans only
the ``nprobe`` cells closest to each probe and returns the ids of the best rows found there.
``GalleryIndex`` then re-ranks those candidates exactly against its own rows, so the reported
distances are exact and only a true neighbour lying in an unscanned cell can be missed.

* ``storage="sq8"``: the cells hold 8-bit scalar codes (128 bytes a row at D=128); ``"flat"``: float32.
* Rows are added and removed by id, without retraining: a removed id is never returned again, which
  is what makes an erasure immediate. Cells trained on a small gallery grow unbalanced as it grows,
  so ``GalleryIndex`` rebuilds when it has grown ``REBUILD_GROWTH`` times past the trained size.
* faiss runs its loops on OpenMP threads; ``threads`` sets them for the process (on a machine shared
  with the decoder and the embedder, 1 or 2). A batch of probes is spread over them.

>>> rows = np.eye(4, 8, dtype=np.float32)
>>> ann = IvfIndex.build(rows, np.arange(4), AnnOptions(nlist=2, nprobe=2))
>>> ann.search(rows[:1], 1).tolist()
[[0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from streamproc.errors import InputError
from streamproc.gallery.hnsw import HnswIndex, HnswOptions
from streamproc.gallery.ivfpq import REBUILD_GROWTH, IvfPqScanIndex
from streamproc.gallery.pqscan import PqScanIndex

AnnKind = Literal["ivfpq", "pq", "hnsw", "ivf"]
KINDS: tuple[AnnKind, ...] = ("ivfpq", "pq", "hnsw", "ivf")
_TRAIN_PER_CELL = 40  # k-means sample: rows per cell (faiss warns below 39)


@dataclass(frozen=True)
class AnnOptions:
    """When and how ``GalleryIndex`` uses the approximate index (see ``GalleryConfig.ann_*``).

    Example:
        >>> AnnOptions(min_size=10).nlist_for(1_000_000)
        2000
    """

    min_size: int = 50_000
    kind: AnnKind = "ivfpq"
    nlist: int = 0
    nprobe: int = 64
    ivf_share: float = 0.375
    storage: Literal["flat", "sq8"] = "flat"
    candidates: int = 32
    threads: int = 1
    m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    pq_m: int = 32

    def __post_init__(self) -> None:
        small = min(
            self.nprobe, self.candidates, self.threads, self.m - 1, self.ef_construction, self.ef_search
        )
        wrong = self.kind not in KINDS or self.storage not in ("flat", "sq8") or not 0 < self.ivf_share <= 1
        if wrong or small < 1:
            raise InputError(
                "AnnOptions: expected kind ivfpq|pq|hnsw|ivf, storage flat|sq8, 0 < ivf_share <= 1, m >= 2 "
                f"and nprobe, candidates, threads, ef_construction, ef_search >= 1, got {self}"
            )

    def hnsw(self) -> HnswOptions:
        """The options of the bitmap-masked indexes (HNSW, PQ scan, IVF-PQ scan)."""
        return HnswOptions(
            m=self.m,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
            storage=self.storage,
            threads=self.threads,
            pq_m=self.pq_m,
            nlist=self.nlist,
            ivf_share=self.ivf_share,
        )

    def nlist_for(self, n: int) -> int:
        """Cells for ``n`` rows: ``nlist`` when set, else 2 * sqrt(n) (about 500 rows a cell at 1M)."""
        return self.nlist if self.nlist > 0 else max(1, min(65536, int(2 * math.sqrt(n))))


class IvfIndex:
    """Candidate ids of the rows nearest to probes; ids are any non-negative int64 chosen by the caller.

    Example:
        >>> ann = IvfIndex.build(rows, ids, AnnOptions())   # doctest: +SKIP
        >>> ann.remove(ids[:1]); ann.search(probes, 32)      # doctest: +SKIP
    """

    def __init__(self, index: faiss.Index, options: AnnOptions, trained_for: int):
        self._index = index
        self.options = options
        self.trained_for = trained_for
        faiss.omp_set_num_threads(options.threads)
        faiss.extract_index_ivf(index).nprobe = options.nprobe

    @classmethod
    def build(cls, rows: np.ndarray, ids: np.ndarray, options: AnnOptions, seed: int = 0) -> IvfIndex:
        """Train the cells on a sample of ``rows`` (float32 unit rows) and add them all under ``ids``."""
        n, dim = rows.shape
        faiss.omp_set_num_threads(options.threads)
        nlist = min(options.nlist_for(n), n)
        quantizer = faiss.IndexFlatL2(dim)
        index: faiss.IndexIVF
        if options.storage == "sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit)
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist)
        sample = min(n, _TRAIN_PER_CELL * nlist)
        pick = np.random.default_rng(seed).choice(n, sample, replace=False) if sample < n else slice(None)
        index.cp.min_points_per_centroid = 1  # small galleries: no warning, the cells are just small
        index.train(np.ascontiguousarray(rows[pick], np.float32))
        out = cls(index, options, n)
        out.add(rows, ids)
        return out

    @property
    def nprobe(self) -> int:
        return int(faiss.extract_index_ivf(self._index).nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        faiss.extract_index_ivf(self._index).nprobe = max(1, int(value))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def nlist(self) -> int:
        return int(faiss.extract_index_ivf(self._index).nlist)

    @property
    def nbytes(self) -> int:
        """Bytes of the codes and ids in the cells plus the centroids."""
        code = 4 * self._index.d if self.options.storage == "flat" else self._index.d
        return len(self) * (code + 8) + self.nlist * self._index.d * 4

    def needs_rebuild(self, rows: int) -> bool:
        """Whether the gallery (``rows``) outgrew the cells: ``REBUILD_GROWTH`` times the trained size."""
        return rows > REBUILD_GROWTH * self.trained_for

    def add(self, rows: np.ndarray, ids: np.ndarray) -> None:
        if len(rows):
            self._index.add_with_ids(np.ascontiguousarray(rows, np.float32), np.asarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Remove every row with one of ``ids``; returns how many were removed."""
        ids = np.asarray(ids, np.int64)
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids))) if len(ids) else 0

    def search(self, probes: np.ndarray, k: int) -> np.ndarray:
        """``(B, k)`` ids of the best rows in the probes' nearest cells, best first; -1 pads."""
        faiss.omp_set_num_threads(self.options.threads)
        _, ids = self._index.search(np.ascontiguousarray(probes, np.float32), k)
        return ids

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def read(cls, path: Path, options: AnnOptions, trained_for: int) -> IvfIndex:
        return cls(faiss.read_index(str(path)), options, trained_for)


AnnIndex = IvfIndex | HnswIndex


MASKED: dict[str, type[HnswIndex]] = {"ivfpq": IvfPqScanIndex, "pq": PqScanIndex, "hnsw": HnswIndex}


def build_ann(rows: np.ndarray, ids: np.ndarray, options: AnnOptions) -> AnnIndex:
    """The index of ``options.kind`` over ``rows`` (float32 unit rows) under ``ids``."""
    if options.kind == "ivf":
        return IvfIndex.build(rows, ids, options)
    return MASKED[options.kind].build(rows, ids, options.hnsw())


def read_ann(path: Path, options: AnnOptions, trained_for: int) -> AnnIndex:
    """An index written by ``save`` (of the kind ``options`` names)."""
    if options.kind == "ivf":
        return IvfIndex.read(path, options, trained_for)
    if options.kind == "ivfpq":
        return IvfPqScanIndex.read(path, options.hnsw(), trained_for)
    return MASKED[options.kind].read(path, options.hnsw())
