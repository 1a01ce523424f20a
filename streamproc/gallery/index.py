"""Exact k-nearest-neighbour search over one model version's gallery, held in memory by a replica.

Rows are unit vectors, so the squared L2 distance ``||p||^2 + ||g||^2 - 2 p.g`` ranks like the dot
product ``p.g``; the search computes dot products in float32 BLAS chunk by chunk (``chunk_rows`` rows at
a time, so the scratch memory is bounded) and keeps, per probe, the best ``m`` rows seen so far: one
vectorised comparison with each probe's current ``m``-th best score drops the rest of a chunk, and the
few survivors are merged with a sort. The matrix product is most of the cost.

* ``dtype="float32"``: 4 bytes a component; the chunk is multiplied in place.
* ``dtype="int8"``: the 128-byte codes of ``quantize``; a chunk is widened to float32 in a reused
  buffer, multiplied, and each row's score scaled by ``1 / ||code||``, so distances are exactly those
  to ``dequantize(code)`` (integer products below 2**24 are exact in float32). 4x less memory; the
  widening costs time (see ``bench/gallery_search.py``).
* ``match="mean"``: one row per person, the renormalised mean of their embeddings (FaceNet's
  template); ``match="best"``: every embedding is a row and a person's distance is that of their
  closest row. The ``m`` best rows kept per probe are enough for ``k`` distinct people:
  ``m = (k - 1) * most_rows_of_anyone + 1``.

A replica ``load``s a snapshot (taking the change-log cursor first), then ``sync``s: every logged
change re-reads that identity's current rows, so replaying a change twice is harmless, and a gap in
the log (entries trimmed before this replica read them) triggers a reload. Not thread-safe: call
``sync`` and ``search`` from one thread.

>>> index = GalleryIndex("facenet-v1", dim=4)
>>> index.upsert("id-ada", "Ada", np.eye(1, 4, dtype=np.float32))
>>> index.search(np.eye(1, 4, dtype=np.float32), k=1)[0][0]
Match(identity_id='id-ada', name='Ada', distance=0.0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from streamproc.errors import GalleryError, IncompatibleModels, InputError
from streamproc.gallery import index_cache
from streamproc.gallery.ann import AnnIndex, AnnOptions
from streamproc.gallery.base import ChangeEvent, Changes, GalleryStore, IdentityRows, Match, named
from streamproc.gallery.candidates import CandidateSearch, index_options
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.exact_scan import ExactScan
from streamproc.gallery.quantize import dequantize, quantize

if TYPE_CHECKING:
    from streamproc.gallery.torch_search import TorchRows

log = logging.getLogger(__name__)


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """float32 unit rows from float rows or int8 codes."""
    if rows.dtype == np.int8:
        return dequantize(rows)
    rows = np.asarray(rows, np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def _grown(a: np.ndarray, cap: int, used: int) -> np.ndarray:
    """``a`` with ``cap`` rows, the first ``used`` copied (``np.resize`` tiles the old content: slower)."""
    out = np.empty((cap, *a.shape[1:]), a.dtype)
    out[:used] = a[:used]
    return out


class GalleryIndex(CandidateSearch, ExactScan):
    """In-memory exact k-NN index of one model version; ``search`` returns the ``k`` closest people.

    Example:
        >>> index = GalleryIndex.load(store, "facenet-v1", dtype="int8")   # doctest: +SKIP
        >>> index.sync()                                                    # doctest: +SKIP
        >>> index.identify(probes)                                          # doctest: +SKIP
        [Match(identity_id='...', name='Ada', distance=0.31), None]
    """

    def __init__(
        self,
        model_version: str = "",
        *,
        dim: int | None = None,
        dtype: Literal["float32", "int8"] = "float32",
        match: Literal["mean", "best"] = "mean",
        k: int = 5,
        threshold: float | None = None,
        chunk_rows: int = 65536,
        ann: AnnOptions | None = AnnOptions(),  # noqa: B008 - frozen
        device: str | None = None,
        cache_dir: Path | None = None,
    ):
        if dtype not in ("float32", "int8") or match not in ("mean", "best"):
            raise InputError(
                f"GalleryIndex: expected dtype float32|int8 and match mean|best, got {dtype} {match}"
            )
        self.model_version = model_version
        self.dtype = dtype
        self.match = match
        self.k = k
        self.threshold = threshold
        self.chunk_rows = max(1024, int(chunk_rows))
        self.ann_options = ann
        self.device = device
        self.cache_dir = cache_dir
        self.cursor = "0-0"
        self._store: GalleryStore | None = None
        self._clear(dim)

    def _clear(self, dim: int | None) -> None:
        self.dim = dim
        self._n = 0  # rows in use: [0, n) of the matrix
        self._mat = np.zeros((0, dim or 0), np.int8 if self.dtype == "int8" else np.float32)
        self._inv = np.zeros(0, np.float32)  # int8: 1 / ||code|| of each row
        self._owner = np.zeros(0, np.int64)  # identity slot of each row
        self._ids: list[str | None] = []  # identity slot -> id (None = free slot)
        self._names: list[str] = []
        self._nrows = np.zeros(0, np.int64)  # identity slot -> rows it has (0 when free)
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._buf = np.zeros((0, 0), np.float32)  # int8 widening scratch
        self._rid = np.zeros(0, np.int64)  # row -> stable row id (what the approximate index holds)
        self._pos = np.zeros(0, np.int64)  # stable row id -> row
        self._next_rid = 0
        self._ann: AnnIndex | None = None
        self._gpu: TorchRows | None = None
        if self.device is not None:
            from streamproc.gallery.torch_search import TorchRows

            self._gpu = TorchRows(self.device)

    # --- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: GalleryConfig, model_version: str, dim: int | None = None) -> GalleryIndex:
        return cls(model_version, dim=dim, threshold=config.threshold, **index_options(config))

    @classmethod
    def load(cls, store: GalleryStore, model_version: str, **kwargs: Any) -> GalleryIndex:
        """Build from the store's snapshot of ``model_version``; ``sync`` keeps it current.

        With ``cache_dir``, an approximate index saved there by an earlier process is restored and
        brought up to date from the change log instead (a full reload when the log was trimmed)."""
        index = cls(model_version, **kwargs)
        index._store = store
        if index.cache_dir is not None and index_cache.restore(index, index._cache_path()):
            index.sync()
        else:
            index.reload()
        return index

    def _cache_path(self) -> Path:
        prefix = getattr(getattr(self._store, "config", None), "prefix", "gallery")
        return Path(self.cache_dir or ".") / f"{prefix}-{self.model_version}"

    def reload(self) -> None:
        """Drop everything and load the store's current snapshot (the cursor is taken first)."""
        store = self._need_store()
        started = time.perf_counter()
        cursor = store.head()
        self._clear(store.model_versions().get(self.model_version, self.dim))
        for batch in store.snapshot(self.model_version, batch_size=2000):  # the next batch is read meanwhile
            before = len(self)
            self._add(batch)
            if len(self) // 100_000 != before // 100_000:
                log.info("gallery index %s: %d identities read", self.model_version, len(self))
        self._refresh_ann()  # once, over everything
        self.cursor = cursor
        log.info(
            "gallery index %s: %d identities, %d rows loaded in %.2fs",
            self.model_version,
            len(self),
            self._n,
            time.perf_counter() - started,
        )
        if self._ann is not None and self.cache_dir is not None:
            index_cache.save(self, self._cache_path())

    def save_cache(self) -> None:
        """Write the approximate index and rows to ``cache_dir`` (a restart then skips the rebuild)."""
        if self.cache_dir is not None:
            index_cache.save(self, self._cache_path())

    @classmethod
    def from_arrays(
        cls, ids: Sequence[str], names: Sequence[str], embeddings: np.ndarray, **kwargs: Any
    ) -> GalleryIndex:
        """One row per identity from an ``(N, D)`` array (float unit rows or int8 codes); no store."""
        index = cls(kwargs.pop("model_version", ""), dim=embeddings.shape[1], **kwargs)
        if len(set(ids)) != len(ids) or len(names) != len(ids) or len(embeddings) != len(ids):
            raise InputError("from_arrays: expected unique ids and one name and one row per id")
        rows = embeddings if embeddings.dtype == np.int8 else _unit_rows(embeddings)
        if index.dtype == "int8" and rows.dtype != np.int8:
            rows = quantize(rows)
        elif index.dtype == "float32" and rows.dtype == np.int8:
            rows = dequantize(rows)
        index._append(list(ids), list(names), rows, np.ones(len(ids), np.int64))
        index._refresh_ann()
        return index

    def _need_store(self) -> GalleryStore:
        if self._store is None:
            raise GalleryError("this index was not loaded from a store; build it with GalleryIndex.load")
        return self._store

    # --- size -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot)

    @property
    def rows(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes of the numpy arrays (matrix, norms, owners; not the id/name dictionaries)."""
        arrays = (self._mat, self._inv, self._owner, self._nrows, self._buf, self._rid, self._pos)
        extra = (0 if self._ann is None else self._ann.nbytes) + (
            0 if self._gpu is None else self._gpu.nbytes
        )
        return sum(a.nbytes for a in arrays) + extra

    # --- updates --------------------------------------------------------------------------------------
    def _encode(self, items: Sequence[IdentityRows]) -> tuple[np.ndarray, np.ndarray]:
        """Stored rows of the identities, concatenated (float32 unit rows or int8 codes; mean mode: one
        row each), and the number of rows of each. Conversions run once over the whole batch."""
        target = np.int8 if self.dtype == "int8" else np.float32
        whole = [item.rows for item in items]
        counts = np.fromiter(map(len, whole), np.int64, len(whole))
        kinds = {(r.ndim, r.shape[1] if r.ndim == 2 else -1, r.dtype) for r in whole}
        if len(kinds) == 1 and counts.min() > 0 and (self.match == "best" or counts.max() == 1):
            ndim, dim, dtype = kinds.pop()  # a bulk load: one shape, one dtype, nothing to average
            if ndim == 2 and dim == (self.dim or dim) and dtype == target:
                block = np.concatenate(whole)
                return (block if target == np.int8 else _unit_rows(block)), counts
        parts: list[np.ndarray] = []
        for item in items:
            rows = item.rows
            if rows.ndim != 2 or len(rows) == 0:
                raise InputError(
                    f"index rows of {item.identity_id}: expected a non-empty (N, D) array, got {rows.shape}"
                )
            if self.dim is not None and rows.shape[1] != self.dim:
                raise IncompatibleModels(
                    f"rows have dimension {rows.shape[1]}, the index of {self.model_version!r} has {self.dim}"
                )
            if self.match == "mean" and len(rows) > 1:
                rows = _unit_rows(rows).mean(axis=0, keepdims=True)
            parts.append(rows)
        counts = np.array([len(r) for r in parts], np.int64)
        other = [i for i, r in enumerate(parts) if r.dtype != target]
        if other:
            mixed = np.concatenate([parts[i] for i in other])
            if target == np.int8:
                converted = quantize(_unit_rows(mixed))
            else:
                converted = dequantize(mixed) if mixed.dtype == np.int8 else mixed.astype(np.float32)
            for i, rows in zip(other, np.split(converted, np.cumsum(counts[other])[:-1]), strict=True):
                parts[i] = rows
        block = np.concatenate(parts)
        return (block if target == np.int8 else _unit_rows(block)), counts

    def _reserve(self, extra: int, dim: int) -> None:
        need = self._n + extra
        if self.dim is None:
            self.dim = dim
            self._mat = np.zeros((0, dim), self._mat.dtype)
        if need <= len(self._mat):
            return
        cap = max(need, 2 * len(self._mat), 1024)  # doubling: a 1M load copies each row about once
        self._mat, self._inv, self._owner, self._rid = (
            _grown(a, cap, self._n) for a in (self._mat, self._inv, self._owner, self._rid)
        )

    def add_many(self, items: Sequence[IdentityRows]) -> None:
        """Insert or replace many identities; vectorised for bulk loads."""
        self._add(items)
        self._refresh_ann()

    def _add(self, items: Sequence[IdentityRows]) -> None:
        if not items:
            return
        latest = {item.identity_id: item for item in items}  # a snapshot may repeat an id
        for ident in [i for i in latest if i in self._slot]:
            self.remove(ident)
        items = list(latest.values())
        block, counts = self._encode(items)
        self._append([i.identity_id for i in items], [i.name for i in items], block, counts)

    def _append(self, ids: list[str], names: list[str], block: np.ndarray, counts: np.ndarray) -> None:
        """Add new identities whose encoded rows are ``block``, ``counts[i]`` consecutive rows each."""
        self._reserve(len(block), block.shape[1])
        slots = self._new_slots(ids, names)
        self._nrows[slots] = counts
        start, stop = self._n, self._n + len(block)
        self._mat[start:stop] = block
        self._owner[start:stop] = np.repeat(slots, counts)
        if self.dtype == "int8":
            norms = np.linalg.norm(block.astype(np.float32), axis=1)
            self._inv[start:stop] = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self._n = stop
        rids = np.arange(self._next_rid, self._next_rid + len(block), dtype=np.int64)
        self._next_rid += len(block)
        if len(self._pos) < self._next_rid:
            self._pos = np.resize(self._pos, max(self._next_rid, 2 * len(self._pos), 1024))
        self._pos[rids] = np.arange(start, stop)
        self._rid[start:stop] = rids
        if self._gpu is not None:
            self._gpu.mark(np.arange(start, stop))
        if self._ann is not None:
            self._ann.add(dequantize(block) if block.dtype == np.int8 else block, rids)

    def upsert(self, identity_id: str, name: str, rows: np.ndarray) -> None:
        """Insert or replace one identity's rows (float unit rows or int8 codes)."""
        self.add_many([IdentityRows(identity_id, name, np.asarray(rows))])

    def _new_slots(self, ids: list[str], names: list[str]) -> np.ndarray:
        """Slots for new identities: free ones first, then appended in one go (bulk loads)."""
        reused = [self._new_slot(i, n) for i, n in zip(ids, names, strict=False) if self._free]
        ids, names = ids[len(reused) :], names[len(reused) :]
        first = len(self._ids)
        self._ids.extend(ids)
        self._names.extend(names)
        self._slot.update(zip(ids, range(first, first + len(ids)), strict=True))
        if len(self._ids) > len(self._nrows):
            grown = np.zeros(max(1024, 2 * len(self._nrows), len(self._ids)), np.int64)
            grown[: len(self._nrows)] = self._nrows
            self._nrows = grown
        return np.concatenate([np.array(reused, np.int64), np.arange(first, first + len(ids))])

    def _new_slot(self, ident: str, name: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._ids[slot], self._names[slot] = ident, name
        else:
            slot = len(self._ids)
            self._ids.append(ident)
            self._names.append(name)
            if slot >= len(self._nrows):
                grown = np.zeros(max(1024, 2 * len(self._nrows)), np.int64)
                grown[: len(self._nrows)] = self._nrows
                self._nrows = grown
        self._slot[ident] = slot
        return slot

    def remove(self, identity_id: str) -> bool:
        """Drop an identity's rows; False when it was not in the index."""
        slot = self._slot.pop(identity_id, None)
        if slot is None:
            return False
        rows = np.flatnonzero(self._owner[: self._n] == slot)[::-1]
        if self._ann is not None:  # first, so the person is never a candidate again
            self._ann.remove(self._rid[rows])
        self._pos[self._rid[rows]] = -1  # and a stale candidate id maps to no row
        for row in rows:
            last = self._n - 1
            if row != last:  # swap-remove keeps rows [0, n) dense
                self._mat[row] = self._mat[last]
                self._inv[row] = self._inv[last]
                self._owner[row] = self._owner[last]
                self._rid[row] = self._rid[last]
                self._pos[self._rid[row]] = row
                if self._gpu is not None:
                    self._gpu.mark(np.array([row]))
            self._n = last
        self._ids[slot], self._names[slot] = None, ""
        self._nrows[slot] = 0
        self._free.append(slot)
        return True

    def apply(self, changes: Changes | Sequence[ChangeEvent]) -> int:
        """Bring the touched identities up to date from the store; returns how many were refreshed."""
        store = self._need_store()
        if isinstance(changes, Changes):
            if changes.gap:
                log.warning("gallery change log was trimmed past this replica's cursor: reloading")
                self.reload()
                return len(self)
            events, cursor = changes.events, changes.cursor
        else:
            events = list(changes)
            cursor = events[-1].stream_id if events else self.cursor
        touched = list(dict.fromkeys(e.identity_id for e in events if e.affects(self.model_version)))
        if touched:
            current = store.fetch(touched, self.model_version)
            for ident in touched:
                if ident not in current:
                    self.remove(ident)
            self.add_many(list(current.values()))
        self.cursor = cursor
        return len(touched)

    def sync(self, block_ms: int | None = None, count: int = 10_000) -> int:
        """Apply every change logged after ``cursor``; returns the number of identities refreshed."""
        store = self._need_store()
        refreshed = 0
        while True:
            changes = store.changes_since(self.cursor, count=count, block_ms=block_ms)
            refreshed += self.apply(changes)
            if changes.gap or len(changes.events) < count:
                return refreshed
            block_ms = None

    # --- search -----------------------------------------------------------------------------------------
    def _check_probes(self, probes: np.ndarray, model_version: str | None) -> np.ndarray:
        if model_version is not None and self.model_version and model_version != self.model_version:
            raise IncompatibleModels(
                f"probes come from model version {model_version!r}, the gallery index holds "
                f"{self.model_version!r}: re-embed the gallery or load the matching index"
            )
        p = np.asarray(probes)
        if p.ndim == 1:
            p = p[None, :]
        if p.ndim != 2 or not np.issubdtype(p.dtype, np.floating):
            raise InputError(f"probes: expected a (B, D) float array, got {p.dtype} {p.shape}")
        if self.dim is not None and p.shape[1] != self.dim:
            raise IncompatibleModels(f"probes have dimension {p.shape[1]}, the gallery index has {self.dim}")
        if not np.all(np.isfinite(p)):
            raise InputError("probes: expected finite values, got NaN or inf")
        return np.ascontiguousarray(p, np.float32)

    def search(
        self, probes: np.ndarray, k: int | None = None, model_version: str | None = None
    ) -> list[list[Match]]:
        """The ``k`` closest people to each probe (``(B, D)`` or ``(D,)``), closest first."""
        p = self._check_probes(probes, model_version)
        k = self.k if k is None else k
        if k < 1:
            raise InputError(f"search: expected k >= 1, got {k}")
        if self._n == 0 or len(p) == 0:
            return [[] for _ in range(len(p))]
        most = int(self._nrows.max()) if self.match == "best" else 1
        m = min(self._n, (min(k, len(self)) - 1) * most + 1)
        scores, rows = self._candidates(p, m)
        pn = np.einsum("ij,ij->i", p, p)
        dist = np.maximum(pn[:, None] + 1.0 - 2.0 * scores, 0.0)  # gallery rows have unit norm
        owners = np.where(rows >= 0, self._owner[np.maximum(rows, 0)], -1)
        out: list[list[Match]] = []
        for b in range(len(p)):
            seen: set[int] = set()
            matches = []
            for slot, d in zip(owners[b].tolist(), dist[b].tolist(), strict=True):
                if slot < 0 or slot in seen:
                    continue
                seen.add(slot)
                matches.append(Match(str(self._ids[slot]), self._names[slot], float(d)))
                if len(matches) == k:
                    break
            out.append(matches)
        return out

    def identify(
        self,
        probes: np.ndarray,
        threshold: float | None = None,
        model_version: str | None = None,
        margin: float = 0.0,
    ) -> list[Match | None]:
        """The closest person per probe when within ``threshold`` (squared L2) and ``margin`` closer
        than the next person, else None (unknown): ``streamproc.gallery.base.named``."""
        limit = self.threshold if threshold is None else threshold
        if limit is None:
            raise InputError("identify: no threshold (resolve one with streamproc.gallery.policy.resolve)")
        results = self.search(probes, k=2, model_version=model_version)
        return [named(r, limit, margin) for r in results]
