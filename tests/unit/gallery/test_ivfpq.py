"""The IVF-PQ scan index (``ivfpq.py``): cells and probes, tiny galleries, erasure at the default share,
save/read, and the rebuild rules; it is the default approximate index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamproc.errors import InputError
from streamproc.gallery.ann import AnnOptions, read_ann
from streamproc.gallery.candidates import index_options
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.hnsw import HnswOptions
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.ivfpq import IvfPqScanIndex
from tests.unit.gallery.test_index import make_people, unit_vectors


def build(n: int, **options: object) -> tuple[IvfPqScanIndex, np.ndarray]:
    rows = unit_vectors(n, seed=6)
    return IvfPqScanIndex.build(rows, np.arange(n) + 100, HnswOptions(**options)), rows  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "nlist", "share", "cells", "nprobe"),
    [
        (1000, 0, 0.375, 32, 12),  # sqrt(1000) cells, ceil(0.375 * 32) probed
        (1000, 10, 0.01, 10, 1),  # at least one cell
        (1000, 10, 1.0, 10, 10),
        (5, 16, 0.375, 5, 2),  # fewer rows than cells asked for: a cell a row
    ],
)
def test_cells_and_cells_scanned(rows: int, nlist: int, share: float, cells: int, nprobe: int) -> None:
    ann, _ = build(rows, nlist=nlist, ivf_share=share)
    assert (ann.nlist, ann.nprobe, ann.trained_for, len(ann)) == (cells, nprobe, rows, rows)


@pytest.mark.parametrize("n", [1, 3, 20])
def test_tiny_gallery_finds_each_row(n: int) -> None:
    ann, rows = build(n, nlist=16, ivf_share=1.0)
    got = ann.search(rows, 2)
    assert got[:, 0].tolist() == list(range(100, 100 + n))
    assert (got[:, 1] == -1).all() if n == 1 else (got[:, 1] >= 0).all()


def test_erased_person_is_never_a_candidate_at_the_default_share() -> None:
    people = make_people(3000, [1])
    index = GalleryIndex("v1", ann=AnnOptions(min_size=100))
    index.add_many(people)
    assert index.kind == "ivfpq" and index._ann is not None and index._ann.nprobe < index._ann.nlist  # type: ignore[union-attr]
    victims = people[::15]
    probes = np.concatenate([v.rows for v in victims])  # their enrolled rows: distance 0
    assert [r[0].identity_id for r in index.search(probes, k=1)] == [v.identity_id for v in victims]
    for victim in victims:
        index.remove(victim.identity_id)
    gone = {v.identity_id for v in victims}
    assert all(len(r) == 10 and not gone & {m.identity_id for m in r} for r in index.search(probes, k=10))


def test_reads_back_what_it_saved_with_its_trained_size(tmp_path: Path) -> None:
    ann, rows = build(400, ivf_share=0.5)
    ann.add(unit_vectors(100, seed=7), np.arange(1000, 1100))
    assert ann.remove(np.array([100, 1000])) == 2
    ann.save(tmp_path / "a.faiss")
    back = read_ann(tmp_path / "a.faiss", AnnOptions(kind="ivfpq", ivf_share=0.5), trained_for=400)
    assert isinstance(back, IvfPqScanIndex)
    assert (back.trained_for, len(back), back.dead, back.nprobe) == (400, 500, 2, ann.nprobe)
    np.testing.assert_array_equal(back.search(rows[:20], 10), ann.search(rows[:20], 10))


def test_rebuild_once_a_quarter_is_removed_or_the_gallery_grew_four_times() -> None:
    ann, _ = build(100)
    assert not ann.needs_rebuild(400) and ann.needs_rebuild(401)  # 4x the trained size
    ann.remove(np.arange(100, 125))
    assert not ann.needs_rebuild(75)
    ann.remove(np.array([125]))
    assert ann.needs_rebuild(74)  # over a quarter dead


def test_gallery_that_grew_four_times_retrains_its_cells() -> None:
    people = make_people(1000, [1])
    index = GalleryIndex("v1", ann=AnnOptions(min_size=200, ivf_share=1.0, candidates=64))
    index.add_many(people[:200])
    first = index._ann
    assert first is not None and first.trained_for == 200
    index.add_many(people[200:800])
    assert index._ann is first  # 800 rows: not yet past 4x
    index.add_many(people[800:])
    assert index._ann is not first and index._ann is not None and index._ann.trained_for == 1000


@pytest.mark.parametrize(
    ("share", "error"), [(0.375, None), (1.0, None), (0.0, InputError), (1.5, InputError)]
)
def test_ivf_share_is_a_fraction_of_the_cells(share: float, error: type[Exception] | None) -> None:
    if error is None:
        assert AnnOptions(ivf_share=share).hnsw().ivf_share == share
    else:
        with pytest.raises(error, match="ivf_share"):
            AnnOptions(ivf_share=share)


def test_config_defaults_to_ivfpq_and_passes_its_share() -> None:
    config = GalleryConfig(search_device="cpu", ann_ivf_share=0.25)
    ann = index_options(config)["ann"]
    assert GalleryConfig().ann_index == "ivfpq" and AnnOptions().kind == "ivfpq"
    assert (ann.kind, ann.ivf_share, ann.threads) == ("ivfpq", 0.25, 1)
