"""How ``GalleryIndex`` finds candidates beyond its exact numpy scan: an IVF-PQ scan, PQ scan, HNSW or IVF
index, or a GPU mirror.

A mix-in of ``GalleryIndex`` (rows, stable row ids and options live there). From
``AnnOptions.min_size`` rows the approximate index (``ann.py``: IVF-PQ scan, PQ scan, HNSW or IVF)
proposes candidates; with a ``device`` the torch
mirror (``torch_search.py``) scans every row. Either way the candidates are re-ranked against the
index's own float32 rows or int8 codes, so reported distances are exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from streamproc import env
from streamproc.gallery.ann import KINDS, AnnIndex, AnnKind, AnnOptions, build_ann
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.quantize import dequantize

if TYPE_CHECKING:
    from streamproc.gallery.torch_search import TorchRows

log = logging.getLogger("streamproc.gallery.index")


class CandidateSearch:
    """The approximate (IVF-PQ scan, PQ scan, HNSW, IVF) and GPU candidate paths of ``GalleryIndex``."""

    model_version: str
    dtype: str
    ann_options: AnnOptions | None
    _mat: np.ndarray
    _inv: np.ndarray
    _rid: np.ndarray
    _pos: np.ndarray
    _n: int
    _ann: AnnIndex | None
    _gpu: TorchRows | None

    _top_rows: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # the exact scan (ExactScan)

    @property
    def kind(self) -> Literal["exact", "gpu"] | AnnKind:
        """How ``search`` finds candidates now: numpy exact scan, IVF-PQ scan, PQ scan, HNSW or IVF + exact
        re-rank, or torch exact."""
        if self._gpu is not None:
            return "gpu"
        ann = self.ann_options
        return ann.kind if self._ann is not None and ann is not None and self._n >= ann.min_size else "exact"

    def _refresh_ann(self) -> None:
        """Build the approximate index once the gallery reaches ``min_size``; rebuild when it went stale
        (IVF: outgrew its cells; PQ scan, HNSW: too many removed rows; IVF-PQ scan: either). Below ``min_size`` an existing one is
        kept current, not used."""
        ann = self.ann_options
        if self._gpu is not None or ann is None or self._n < ann.min_size:
            return
        if self._ann is None or self._ann.needs_rebuild(self._n):
            self.build_ann()

    def use_ann(self, ann: AnnIndex, options: AnnOptions) -> None:
        """Search through ``ann``, built elsewhere over exactly this index's rows under their row ids
        (``row_ids``), e.g. read back from a file; later changes keep it current."""
        self.ann_options = options
        self._ann = ann

    @property
    def row_ids(self) -> np.ndarray:
        """The stable id of each row, what an approximate index holds."""
        return self._rid[: self._n]

    def build_ann(self) -> None:
        """(Re)build the approximate index over every row now (``search`` uses it from ``min_size``)."""
        options = self.ann_options or AnnOptions()
        started = time.perf_counter()
        rows = self._mat[: self._n]
        self._ann = None
        self._ann = build_ann(
            dequantize(rows) if rows.dtype == np.int8 else rows, self._rid[: self._n], options
        )
        log.info(
            "gallery index %s: %s of %d rows (%s) built in %.1fs",
            self.model_version,
            options.kind.upper(),
            self._n,
            options.storage,
            time.perf_counter() - started,
        )

    def _candidates(self, p: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Per probe, the ``m`` best rows (scores, row indices) of the search path in use."""
        kind = self.kind
        if kind == "gpu" and self._gpu is not None:
            _, rows = self._gpu.top(self._mat, self._n, p, max(m, 16))
            return self._rerank(p, rows, m)
        if kind in KINDS and self._ann is not None and self.ann_options is not None:
            unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
            ids = self._ann.search(unit, max(m, self.ann_options.candidates))
            return self._rerank(p, np.where(ids >= 0, self._pos[np.maximum(ids, 0)], -1), m)  # -1: none
        return self._top_rows(p, m)

    def _rerank(self, p: np.ndarray, rows: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of candidate ``rows`` (``(B, c)``, -1 = none), the best ``m`` of each probe first."""
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        vecs = self._mat[safe]
        scores = np.einsum("bcd,bd->bc", vecs if vecs.dtype == np.float32 else vecs.astype(np.float32), p)
        if self.dtype == "int8":
            scores *= self._inv[safe]
        scores[~valid] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :m]
        best = np.take_along_axis(scores, order, 1)
        return best, np.where(np.isfinite(best), np.take_along_axis(safe, order, 1), -1)


def index_options(config: GalleryConfig) -> dict[str, Any]:
    """``GalleryIndex`` keyword arguments from the gallery configuration (everything but the threshold)."""
    device: str | None = None
    if config.search_device != "cpu":
        from streamproc.gallery.torch_search import cuda_device

        device = "cuda" if config.search_device == "cuda" else cuda_device()
    ann = None
    if config.ann_min_size is not None:
        ann = AnnOptions(
            min_size=config.ann_min_size,
            kind=config.ann_index,
            nlist=config.ann_nlist,
            nprobe=config.ann_nprobe,
            storage=config.ann_storage,
            candidates=config.ann_candidates,
            threads=config.ann_threads,
            m=config.ann_hnsw_m,
            ef_construction=config.ann_hnsw_ef_construction,
            ef_search=config.ann_hnsw_ef_search,
            pq_m=config.ann_pq_m,
            ivf_share=config.ann_ivf_share,
        )
    return {
        "dtype": config.dtype,
        "match": config.match,
        "k": config.k,
        "ann": ann,
        "device": device,
        "cache_dir": config.index_cache_dir or env.data_dir() / "index",
    }
