"""Exact search on a GPU: the gallery rows mirrored in device memory, scored by one matrix product.

A CUDA device holds the rows in float16 (2 bytes a component: 10M x 128 rows is 2.4 GiB) and scores
chunk by chunk (``chunk_rows`` at a time, bounding the scratch), keeping each probe's best ``m`` rows
with ``torch.topk``. float16 scores carry ~1e-3 of rounding, so ``GalleryIndex`` re-ranks the
candidates exactly against its float32/int8 host rows. On the CPU the same code runs in float32 (what
the tests exercise on machines without a GPU).

The mirror follows the host matrix lazily: ``mark`` records the rows that changed and ``top`` uploads
them before scoring, so a burst of changes costs one upload.

>>> mirror = TorchRows("cpu")
>>> rows = np.eye(3, 4, dtype=np.float32)
>>> mirror.mark(np.arange(3))
>>> scores, best = mirror.top(rows, 3, rows[1:2], 1)
>>> best.tolist()
[[1]]
"""

from __future__ import annotations

import numpy as np
import torch

from streamproc.gallery.quantize import dequantize


def cuda_device() -> str | None:
    """``"cuda"`` when torch sees a GPU, else None."""
    return "cuda" if torch.cuda.is_available() else None


class TorchRows:
    """A device copy of a ``GalleryIndex`` matrix and the chunked top-m search over it.

    Example:
        >>> mirror = TorchRows("cuda")                      # doctest: +SKIP
        >>> mirror.mark(np.arange(n)); mirror.top(mat, n, probes, 32)   # doctest: +SKIP
    """

    def __init__(self, device: str, chunk_rows: int = 1 << 20):
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.chunk_rows = max(1024, int(chunk_rows))
        self._rows = torch.zeros((0, 0), dtype=self.dtype, device=self.device)
        self._dirty: list[np.ndarray] = []

    @property
    def nbytes(self) -> int:
        return self._rows.numel() * self._rows.element_size()

    def mark(self, rows: np.ndarray) -> None:
        """Host rows ``rows`` changed (appended or overwritten): upload them before the next search."""
        self._dirty.append(np.asarray(rows, np.int64))

    def _upload(self, mat: np.ndarray, n: int) -> None:
        if len(self._rows) < n or self._rows.shape[1] != mat.shape[1]:
            grown = torch.zeros((max(n, len(mat)), mat.shape[1]), dtype=self.dtype, device=self.device)
            if self._rows.shape[1] == mat.shape[1]:
                keep = min(len(self._rows), n)
                grown[:keep] = self._rows[:keep]
            else:  # first upload (or another dimension): every row
                self._dirty = [np.arange(n)]
            self._rows = grown
        if not self._dirty:
            return
        rows = np.unique(np.concatenate(self._dirty))
        self._dirty = []
        rows = rows[rows < n]
        if not len(rows):
            return
        host = mat[rows]
        host = dequantize(host) if host.dtype == np.int8 else host
        values = torch.from_numpy(np.ascontiguousarray(host, np.float32)).to(self.device, self.dtype)
        self._rows[torch.from_numpy(rows).to(self.device)] = values

    @torch.inference_mode()
    def top(self, mat: np.ndarray, n: int, probes: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Per probe, the ``m`` rows of ``mat[:n]`` with the highest dot product: scores and row indices."""
        self._upload(mat, n)
        p = torch.from_numpy(np.ascontiguousarray(probes, np.float32)).to(self.device, self.dtype)
        best_s = torch.full((len(p), 0), -torch.inf, device=self.device)
        best_i = torch.zeros((len(p), 0), dtype=torch.int64, device=self.device)
        for start in range(0, n, self.chunk_rows):
            stop = min(n, start + self.chunk_rows)
            scores = (p @ self._rows[start:stop].T).float()
            s, i = torch.topk(scores, min(m, stop - start), dim=1)
            best_s, order = torch.topk(torch.cat([best_s, s], 1), min(m, best_s.shape[1] + s.shape[1]), dim=1)
            best_i = torch.gather(torch.cat([best_i, i + start], 1), 1, order)
        return best_s.cpu().numpy(), best_i.cpu().numpy()
