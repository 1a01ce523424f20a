"""``MemoryGalleryStore``: the whole gallery in this process's memory, gone when it exits.

For tests and for code that needs a gallery but no server. It keeps the contract of the Redis store
(the base class checks the input; the same errors; the change log with its cursors, trimming and
blocking reads; float32 or int8 rows) without durability: every write is atomic under one lock.

Example:
    >>> store = MemoryGalleryStore()
    >>> store.enroll("Ada", np.eye(1, 4, dtype=np.float32), "v1").embeddings
    {'v1': 1}
    >>> [e.op for e in store.changes_since("0-0").events]
    ['enroll']
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from streamproc.errors import GalleryError, InputError, UnknownIdentity
from streamproc.gallery.base import ChangeEvent, Changes, GalleryStore, Identity, IdentityRows, Op, Unknowns
from streamproc.gallery.quantize import dequantize, quantize


def _seq(cursor: str) -> int:
    """The entry number of a ``"n-0"`` cursor (the Redis stream id shape)."""
    return int(cursor.partition("-")[0] or 0)


class MemoryGalleryStore(GalleryStore):
    """The gallery in dictionaries; ``dtype``, ``retain_crops`` and ``changelog_maxlen`` act as in Redis."""

    def __init__(
        self,
        *,
        dtype: Literal["float32", "int8"] = "float32",
        retain_crops: bool = False,
        changelog_maxlen: int = 100_000,
    ):
        self.dtype = np.dtype(np.int8 if dtype == "int8" else np.float32)
        self.retain_crops = retain_crops
        self._ids: dict[str, str] = {}  # name -> id
        self._people: dict[str, Identity] = {}  # id -> identity
        self._rows: dict[tuple[str, str], np.ndarray] = {}  # (model version, id) -> stored rows
        self._crop_sets: dict[str, list[np.ndarray]] = {}
        self._dims: dict[str, int] = {}  # model version -> dimension, fixed by its first write
        self._unknown: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]] = {}
        self._calibrations: dict[str, dict[str, Any]] = {}
        self._last_us = 0  # time of the newest unknown face, in microseconds
        self._log: deque[ChangeEvent] = deque(maxlen=changelog_maxlen)
        self._logged = 0  # entries ever written: the newest entry is f"{_logged}-0"
        self._lock = threading.Condition()

    # --- identities ---------------------------------------------------------------------------------
    def _enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        model_version: str,
        crops: np.ndarray | None,
        metadata: dict[str, Any] | None,
        replace: bool,
    ) -> Identity:
        with self._lock:
            self._check_dim(model_version, embeddings.shape[1])
            return self._write(name, self._pack(embeddings), model_version, crops, metadata, replace)

    def _enroll_many(self, people: list[tuple[str, np.ndarray]], model_version: str) -> list[Identity]:
        with self._lock:
            if len({emb.shape[1] for _, emb in people}) > 1:
                raise InputError("enroll_many: every person's embeddings must have the same dimension")
            self._check_dim(model_version, people[0][1].shape[1])  # checked before the first write
            return [self._write(n, self._pack(e), model_version, None, None, False) for n, e in people]

    def _write(
        self,
        name: str,
        rows: np.ndarray,
        mv: str,
        crops: np.ndarray | None,
        metadata: dict[str, Any] | None,
        replace: bool,
    ) -> Identity:
        now = time.time()
        ident = self._ids.get(name) or uuid.uuid4().hex
        old = self._people.get(ident) or Identity(ident, name, created=now)
        if not replace and (mv, ident) in self._rows:
            rows = np.concatenate([self._rows[mv, ident], rows])
        self._rows[mv, ident] = rows
        self._dims.setdefault(mv, rows.shape[1])
        kept = 0
        if crops is not None and self.retain_crops:
            self._crop_sets.setdefault(ident, []).append(crops.copy())
            kept = len(crops)
        identity = dataclasses.replace(
            old,
            metadata=old.metadata if metadata is None else dict(metadata),
            updated=now,
            embeddings=dict(sorted((old.embeddings | {mv: len(rows)}).items())),
            crops=old.crops + kept,
        )
        self._ids[name], self._people[ident] = ident, identity
        self._append("enroll", ident, mv, now)
        return identity

    def _delete(self, name: str) -> Identity:
        with self._lock:
            identity = self._people.pop(self._id_of(name))
            del self._ids[name]
            for mv in identity.embeddings:
                del self._rows[mv, identity.id]
            self._crop_sets.pop(identity.id, None)
            self._append("delete", identity.id, "", time.time())
            return identity

    def _get(self, name: str) -> Identity:
        with self._lock:
            return self._people[self._id_of(name)]

    def _list(self) -> list[Identity]:
        with self._lock:
            return sorted(self._people.values(), key=lambda i: i.name)

    def _set_metadata(self, name: str, metadata: dict[str, Any]) -> Identity:
        with self._lock:
            now = time.time()
            ident = self._id_of(name)
            identity = dataclasses.replace(self._people[ident], metadata=dict(metadata), updated=now)
            self._people[ident] = identity
            self._append("update", ident, "", now)
            return identity

    def _embeddings(self, name: str, model_version: str) -> np.ndarray:
        with self._lock:
            rows = self._rows.get((model_version, self._id_of(name)))
        if rows is None:
            raise UnknownIdentity(f"{name!r} has no embeddings for model version {model_version!r}")
        return self._unpack(rows)

    def _crops(self, name: str) -> list[np.ndarray]:
        with self._lock:
            return [c.copy() for c in self._crop_sets.get(self._id_of(name), [])]

    def _model_versions(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._dims.items()))

    # --- unknown faces ------------------------------------------------------------------------------
    def _add_unknown(self, embedding: np.ndarray, model_version: str, meta: dict[str, Any]) -> str:
        now = time.time()
        with self._lock:
            self._last_us = max(int(now * 1e6), self._last_us + 1)  # two in one microsecond keep their order
            uid = f"{self._last_us:014x}" + secrets.token_hex(4)  # sorts by time, as in Redis
            self._check_dim(model_version, embedding.shape[1])
            self._dims.setdefault(model_version, embedding.shape[1])
            self._unknown.setdefault(model_version, {})[uid] = (self._pack(embedding), {"time": now, **meta})
        return uid

    def _unknowns(self, model_version: str) -> Unknowns:
        with self._lock:
            faces = dict(self._unknown.get(model_version, {}))
            dim = self._dims.get(model_version, 0)
        ids = sorted(faces)
        if not ids:
            return Unknowns(ids=[], embeddings=np.zeros((0, dim), np.float32), meta=[])
        rows = self._unpack(np.concatenate([faces[i][0] for i in ids]))
        return Unknowns(ids=ids, embeddings=rows, meta=[dict(faces[i][1]) for i in ids])

    def _delete_unknowns(self, model_version: str, ids: list[str]) -> int:
        with self._lock:
            faces = self._unknown.get(model_version, {})
            return sum(faces.pop(uid, None) is not None for uid in set(ids))

    def _forget_unknowns(self, before: float) -> int:
        with self._lock:
            old = [
                (f, uid) for f in self._unknown.values() for uid, (_, m) in f.items() if m["time"] < before
            ]
            for faces, uid in old:
                del faces[uid]
            return len(old)

    def _promote(
        self, ids: list[str], name: str, model_version: str, metadata: dict[str, Any] | None
    ) -> Identity:
        with self._lock:
            faces = self._unknown.get(model_version, {})
            missing = [uid for uid in ids if uid not in faces]
            if missing:
                raise GalleryError(
                    f"unknown faces {missing} of model version {model_version!r} no longer exist "
                    "(promoted or deleted meanwhile); cluster again"
                )
            rows = np.concatenate([faces.pop(uid)[0] for uid in ids])
            return self._write(name, rows, model_version, None, metadata, False)

    # --- replicas -----------------------------------------------------------------------------------
    def _snapshot(self, model_version: str, batch_size: int) -> Iterator[list[IdentityRows]]:
        with self._lock:
            found = [
                IdentityRows(ident, self._people[ident].name, rows)
                for (mv, ident), rows in self._rows.items()
                if mv == model_version
            ]
        for start in range(0, len(found), batch_size):
            yield found[start : start + batch_size]

    def _fetch(self, identity_ids: list[str], model_version: str) -> dict[str, IdentityRows]:
        with self._lock:
            return {
                i: IdentityRows(i, self._people[i].name, self._rows[model_version, i])
                for i in identity_ids
                if (model_version, i) in self._rows
            }

    def _changes_since(self, cursor: str, count: int, block_ms: int | None) -> Changes:
        after = _seq(cursor)
        with self._lock:
            if block_ms:
                self._lock.wait_for(lambda: self._logged > after, timeout=block_ms / 1000)
            first = self._logged - len(self._log) + 1  # the oldest entry still in the log
            events = [e for e in self._log if _seq(e.stream_id) > after][:count]
            gap = after < first - 1  # entries right after the cursor were trimmed
        return Changes(events, events[-1].stream_id if events else cursor, gap)

    def _head(self) -> str:
        with self._lock:
            return f"{self._logged}-0"

    # --- open-set calibration ------------------------------------------------------------------------
    def calibration(self, model_version: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._calibrations.get(model_version)
        return None if found is None else dict(found)

    def set_calibration(self, model_version: str, calibration: dict[str, Any]) -> None:
        with self._lock:
            self._calibrations[model_version] = dict(calibration)

    # --- helpers (called with the lock held) -----------------------------------------------------------
    def _id_of(self, name: str) -> str:
        ident = self._ids.get(name)
        if ident is None:
            raise UnknownIdentity(f"no identity named {name!r} in the gallery; list them with `gallery list`")
        return ident

    def _check_dim(self, model_version: str, dim: int) -> None:
        stored = self._dims.get(model_version)
        if stored is not None and stored != dim:
            raise InputError(
                f"embeddings have dimension {dim}, but model version {model_version!r} stores {stored}: "
                "embed with that model, or enrol under a new model version"
            )

    def _append(self, op: Op, ident: str, mv: str, now: float) -> None:
        self._logged += 1
        self._log.append(ChangeEvent(f"{self._logged}-0", op, ident, mv, now))
        self._lock.notify_all()

    def _pack(self, emb: np.ndarray) -> np.ndarray:
        return quantize(emb) if self.dtype == np.int8 else emb.astype(np.float32)

    @staticmethod
    def _unpack(rows: np.ndarray) -> np.ndarray:
        return dequantize(rows) if rows.dtype == np.int8 else rows.astype(np.float32)
