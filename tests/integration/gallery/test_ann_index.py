"""The approximate gallery index (IVF-PQ scan, PQ scan, HNSW and IVF) over a real Redis: erasure, restart from the saved
index, a trimmed log."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from streamproc.gallery.ann import AnnOptions
from streamproc.gallery.index import GalleryIndex
from tests.integration.gallery.conftest import StoreFactory
from tests.unit.gallery.test_index import unit_vectors

pytestmark = pytest.mark.integration
IVF = AnnOptions(min_size=200, kind="ivf", nlist=8, nprobe=8, candidates=32)
HNSW = AnnOptions(min_size=200, kind="hnsw", m=8, ef_search=1000, candidates=32)  # walks all it links to
PQ = AnnOptions(min_size=200, kind="pq", candidates=1000)  # every row a candidate
IVFPQ = AnnOptions(min_size=200, kind="ivfpq", ivf_share=1.0, candidates=1000)  # every cell, every row
EACH = pytest.mark.parametrize("ann", [IVFPQ, PQ, HNSW, IVF], ids=["ivfpq", "pq", "hnsw", "ivf"])
MV = "facenet-v1"


def enrol(make_store: StoreFactory, n: int, **kwargs: object) -> tuple[object, list[str], np.ndarray]:
    store = make_store(**kwargs)
    names = [f"person {i}" for i in range(n)]
    rows = unit_vectors(n, seed=4)
    store.enroll_many([(name, rows[i : i + 1]) for i, name in enumerate(names)], MV)
    return store, names, rows


def top_names(index: GalleryIndex, probes: np.ndarray, k: int) -> list[list[str]]:
    return [[m.name for m in r] for r in index.search(probes, k=k)]


@EACH
def test_deleted_person_is_not_returned_right_after_gallery_delete(
    make_store: StoreFactory, ann: AnnOptions
) -> None:
    store, names, rows = enrol(make_store, 600)
    index = GalleryIndex.load(store, MV, ann=ann)
    assert index.kind == ann.kind and len(index) == 600
    victims = [5, 77, 301]
    probes = rows[victims]  # the very embeddings enrolled: the nearest neighbour at distance 0
    assert [r[0] for r in top_names(index, probes, 1)] == [names[v] for v in victims]
    for v in victims:
        store.delete(names[v])
    index.sync()
    found = top_names(index, probes, 20)
    assert all(len(r) == 20 and not {names[v] for v in victims} & set(r) for r in found)
    exact = GalleryIndex.load(store, MV, ann=None)
    assert found == top_names(exact, probes, 20)


@EACH
def test_restart_restores_the_saved_index_and_replays_erasures(
    make_store: StoreFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, ann: AnnOptions
) -> None:
    store, names, rows = enrol(make_store, 500)
    first = GalleryIndex.load(store, MV, ann=ann, cache_dir=tmp_path)
    assert any(tmp_path.glob("*/ann-*.faiss"))
    store.delete(names[10])  # while the replica is down
    newcomer = unit_vectors(1, seed=99)
    store.enroll("newcomer", newcomer, MV)
    del first
    caplog.set_level(logging.INFO, logger="streamproc.gallery")
    again = GalleryIndex.load(store, MV, ann=ann, cache_dir=tmp_path)
    assert "restored" in caplog.text and "loaded in" not in caplog.text and "built" not in caplog.text
    assert again.kind == ann.kind and len(again) == 500
    probes = np.concatenate([rows[[10, 11]], newcomer])
    got = top_names(again, probes, 3)
    assert names[10] not in {n for r in got for n in r}
    assert got[1][0] == names[11] and got[2][0] == "newcomer"
    assert got == top_names(GalleryIndex.load(store, MV, ann=None), probes, 3)


def test_trimmed_change_log_makes_the_restart_reload(
    make_store: StoreFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, names, rows = enrol(make_store, 300, changelog_maxlen=10)
    GalleryIndex.load(store, MV, ann=IVF, cache_dir=tmp_path)
    for name in names[:150]:  # far more changes than the log keeps
        store.delete(name)
    caplog.set_level(logging.INFO, logger="streamproc.gallery")
    again = GalleryIndex.load(store, MV, ann=IVF, cache_dir=tmp_path)
    assert "trimmed" in caplog.text and len(again) == 150 and again.kind == "exact"
    got = top_names(again, rows[:150], 1)
    assert not set(names[:150]) & {r[0] for r in got}
