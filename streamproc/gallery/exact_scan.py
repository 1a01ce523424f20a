"""The exact scan of ``GalleryIndex``: dot products chunk by chunk, the best ``m`` rows kept per probe.

A mix-in of ``GalleryIndex`` (its rows, norms and scratch live there); see that module's docstring for
how float32 rows and int8 codes are scored.
"""

from __future__ import annotations

import numpy as np

_FIRST_CHUNK = 4096  # a small first chunk sets every probe's threshold cheaply
_INT8_CHUNK = 32768  # int8 rows widened at a time: a 16 MiB float32 scratch at D=128


class ExactScan:
    """Per probe, the ``m`` rows of highest dot product among rows ``[0, _n)`` of ``_mat``."""

    _mat: np.ndarray
    _inv: np.ndarray
    _buf: np.ndarray
    _n: int
    dim: int | None
    dtype: str
    chunk_rows: int

    def _chunk(self, start: int, stop: int) -> np.ndarray:
        if self.dtype == "float32":
            return self._mat[start:stop]
        if len(self._buf) < stop - start or self._buf.shape[1] != self.dim:
            rows = max(stop - start, min(self.chunk_rows, _INT8_CHUNK, max(_FIRST_CHUNK, self._n // 8)))
            self._buf = np.empty((rows, self.dim or 0), np.float32)  # widening scratch, reused
        out = self._buf[: stop - start]
        np.copyto(out, self._mat[start:stop], casting="unsafe")
        return out

    def _top_rows(self, p: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Per probe, the ``m`` rows of highest dot product: scores and row indices, best first."""
        step = self.chunk_rows
        if self.dtype == "int8":  # the widening scratch stays below half the size of the codes
            step = min(step, _INT8_CHUNK, max(_FIRST_CHUNK, self._n // 8))
        stop = min(self._n, max(_FIRST_CHUNK, m))
        first = np.ascontiguousarray(self._scores(p, 0, stop).T)  # (B, c)
        top = np.argpartition(first, stop - m, axis=1)[:, stop - m :]
        best_s = np.take_along_axis(first, top, 1)
        order = np.argsort(-best_s, axis=1)
        best_s, best_i = (
            np.take_along_axis(best_s, order, 1),
            np.take_along_axis(top, order, 1).astype(np.int64),
        )
        while stop < self._n:
            start, stop = stop, min(self._n, stop + step)
            scores = self._scores(p, start, stop)
            hits = np.flatnonzero(scores > best_s[None, :, -1])  # rows that beat a probe's m-th best
            if len(hits):
                self._merge(scores, hits, start, best_s, best_i)
        return best_s, best_i

    def _scores(self, p: np.ndarray, start: int, stop: int) -> np.ndarray:
        """``(stop - start, B)`` dot products of rows ``[start, stop)`` with the probes."""
        chunk = self._chunk(start, stop)
        scores = (chunk @ p[0])[:, None] if len(p) == 1 else chunk @ p.T  # BLAS is fastest this way round
        if self.dtype == "int8":
            scores *= self._inv[start:stop, None]
        return scores

    @staticmethod
    def _merge(
        scores: np.ndarray, hits: np.ndarray, start: int, best_s: np.ndarray, best_i: np.ndarray
    ) -> None:
        """Merge the hits (flat indices into the ``(c, B)`` scores) into the sorted best lists, vectorised."""
        m = best_s.shape[1]
        row, col = np.divmod(hits, scores.shape[1])
        need = np.unique(col)  # probes this chunk improves
        group = np.concatenate([np.repeat(np.arange(len(need)), m), np.searchsorted(need, col)])
        cand_s = np.concatenate([best_s[need].ravel(), scores.ravel()[hits]])
        cand_i = np.concatenate([best_i[need].ravel(), row + start])
        order = np.lexsort((-cand_s, group))  # by probe, then best first
        rank = np.arange(len(order)) - np.searchsorted(group[order], group[order])
        keep = order[rank < m]  # every probe has at least its m current entries
        best_s[need] = cand_s[keep].reshape(len(need), m)
        best_i[need] = cand_i[keep].reshape(len(need), m)
