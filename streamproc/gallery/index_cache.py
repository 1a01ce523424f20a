"""A ``GalleryIndex`` saved to disk, so a restarted replica skips the Redis load and the index build.

One folder per store prefix and model version holds ``meta.json`` (change-log cursor, settings, a
token), ``rows-<token>.npz`` (the rows, their owners and the id/name lists) and ``ann-<token>.faiss``
(IVF-PQ scan, PQ scan, HNSW: with ``ann-<token>.faiss.ids.npz``, its id map and the bitmap of removed
rows).
The meta file is replaced last, so a crash mid-save leaves the previous save readable.

``restore`` refuses a save made with other settings, and one whose cursor is ahead of the store's
change log (another server, or a wiped log); the caller then reloads from the store. After a restore
the caller ``sync``s from the saved cursor, which re-applies every change since, erasures included;
a trimmed log (``Changes.gap``) makes that sync a full reload.

Like the Redis data it mirrors, a save holds embeddings and names: a person erased after the last save
stays in the file until the next one (``GalleryIndex.save_cache``, and every full reload, rewrite it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamproc.gallery.ann import read_ann
from streamproc.gallery.redis_base import stream_key

if TYPE_CHECKING:
    from streamproc.gallery.index import GalleryIndex

log = logging.getLogger(__name__)
_FORMAT = 2


def _settings(index: GalleryIndex) -> dict[str, object]:
    ann = index.ann_options
    return {
        "format": _FORMAT,
        "model_version": index.model_version,
        "dtype": index.dtype,
        "match": index.match,
        "ann": None
        if ann is None
        else [ann.kind, ann.nlist, ann.storage, ann.m, ann.ef_construction, ann.pq_m],
    }


def _text(values: Sequence[str | None]) -> np.ndarray:
    return np.frombuffer("\n".join(v or "" for v in values).encode(), np.uint8)


def save(index: GalleryIndex, folder: Path) -> None:
    """Write ``index`` (rows, ids, names, approximate index, cursor) to ``folder``; no-op without one."""
    ann = index._ann
    if ann is None:
        return
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    n = index._n
    with open(folder / f"rows-{token}.npz", "wb") as fh:
        np.savez(
            fh,
            mat=index._mat[:n],
            inv=index._inv[:n],
            owner=index._owner[:n],
            rid=index._rid[:n],
            nrows=index._nrows[: len(index._ids)],
            ids=_text(index._ids),
            names=_text(index._names),
        )
    ann.save(folder / f"ann-{token}.faiss")
    meta = _settings(index) | {
        "token": token,
        "cursor": index.cursor,
        "dim": index.dim,
        "next_rid": index._next_rid,
        "trained_for": ann.trained_for,
    }
    tmp = folder / "meta.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "meta.json")
    for old in [*folder.glob("rows-*.npz"), *folder.glob("ann-*")]:
        if token not in old.name:
            old.unlink(missing_ok=True)
    log.info(
        "gallery index %s: saved %d rows to %s in %.1fs",
        index.model_version,
        n,
        folder,
        time.perf_counter() - started,
    )


def restore(index: GalleryIndex, folder: Path) -> bool:
    """Fill ``index`` from ``folder``; False (``index`` untouched) when there is no usable save."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    store = index._need_store()
    if index._gpu is not None:  # the GPU path searches exactly: nothing to restore
        return False
    if any(meta.get(key) != value for key, value in _settings(index).items()) or index.ann_options is None:
        log.info("gallery index cache %s was saved with other settings: reloading", folder)
        return False
    if stream_key(store.head()) < stream_key(meta["cursor"]):
        log.warning("gallery index cache %s is ahead of the store's change log: reloading", folder)
        return False
    started = time.perf_counter()
    token = meta["token"]
    try:
        with np.load(folder / f"rows-{token}.npz", allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
        ann = read_ann(folder / f"ann-{token}.faiss", index.ann_options, int(meta["trained_for"]))
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("gallery index cache %s is unreadable (%s): reloading", folder, exc)
        return False
    _fill(index, meta, arrays)
    index._ann = ann
    log.info(
        "gallery index %s: %d rows restored from %s in %.1fs",
        index.model_version,
        index._n,
        folder,
        time.perf_counter() - started,
    )
    return True


def _fill(index: GalleryIndex, meta: dict[str, object], arrays: dict[str, np.ndarray]) -> None:
    index._clear(int(meta["dim"]))  # type: ignore[call-overload]
    n = len(arrays["mat"])
    index._mat, index._inv, index._owner, index._rid = (
        arrays["mat"],
        arrays["inv"],
        arrays["owner"],
        arrays["rid"],
    )
    index._n = n
    ids = bytes(arrays["ids"]).decode().split("\n")
    index._ids = [i or None for i in ids]
    index._names = bytes(arrays["names"]).decode().split("\n")
    index._nrows = np.zeros(max(1024, len(ids)), np.int64)
    index._nrows[: len(ids)] = arrays["nrows"]
    index._slot = {ident: slot for slot, ident in enumerate(ids) if ident}
    index._free = [slot for slot, ident in enumerate(ids) if not ident]
    index._next_rid = int(meta["next_rid"])  # type: ignore[call-overload]
    index._pos = np.zeros(max(index._next_rid, 1024), np.int64)
    index._pos[index._rid] = np.arange(n)
    index.cursor = str(meta["cursor"])
