"""The in-memory exact k-NN index against brute force over hand-made unit vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamproc.errors import GalleryError, IncompatibleModels, InputError
from streamproc.gallery.base import IdentityRows
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.quantize import dequantize, quantize


def unit_vectors(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy(rows: np.ndarray, scale: float, seed: int) -> np.ndarray:
    x = rows + scale * unit_vectors(len(rows), rows.shape[1], seed)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_people(n: int, rows_each: list[int], dim: int = 128, seed: int = 0) -> list[IdentityRows]:
    centres = unit_vectors(n, dim, seed)
    return [
        IdentityRows(f"id{i}", f"Person {i}", noisy(np.repeat(centres[i : i + 1], rows_each[i % len(rows_each)], 0), 0.3, seed + i))
        for i in range(n)
    ]  # fmt: skip


def brute_force(
    people: list[IdentityRows], probes: np.ndarray, k: int, match: str, dtype: str
) -> list[list[Any]]:
    """Expected (id, distance) lists: per person, mean-template or closest-row distance."""
    templates = []
    for person in people:
        rows = person.rows
        if match == "mean":
            mean = rows.mean(0, keepdims=True)
            rows = mean / np.linalg.norm(mean)
        templates.append(dequantize(quantize(rows)) if dtype == "int8" else rows)
    out = []
    for p in probes:
        scored = sorted(
            (float(np.min(np.sum((t - p) ** 2, axis=1))), person.identity_id)
            for t, person in zip(templates, people, strict=True)
        )
        out.append([(i, d) for d, i in scored[:k]])
    return out


def assert_matches(got: list[list[Any]], expected: list[list[Any]]) -> None:
    for g, e in zip(got, expected, strict=True):
        assert [m.identity_id for m in g] == [i for i, _ in e]
        np.testing.assert_allclose([m.distance for m in g], [d for _, d in e], atol=2e-5)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("match", ["mean", "best"])
@pytest.mark.parametrize("k, batch", [(1, 1), (5, 1), (5, 32), (40, 3)])
def test_search_equals_brute_force(dtype: str, match: str, k: int, batch: int) -> None:
    people = make_people(3000, [1, 2, 5])
    index = GalleryIndex("v1", dtype=dtype, match=match, chunk_rows=1024)  # many chunks: exercises merging
    index.add_many(people)
    probes = np.concatenate([noisy(people[7].rows[:1], 0.2, 99), unit_vectors(batch - 1, seed=5)])[:batch]
    assert_matches(index.search(probes, k=k), brute_force(people, probes, k, match, dtype))


def test_best_rows_of_one_person_do_not_crowd_out_others() -> None:
    many = IdentityRows("many", "Many", noisy(np.repeat(unit_vectors(1, seed=1), 50, 0), 0.05, 2))
    others = make_people(10, [1], seed=3)
    index = GalleryIndex(match="best")
    index.add_many([many, *others])
    probe = many.rows[:1]
    got = index.search(probe, k=4)[0]
    assert got[0].identity_id == "many" and len({m.identity_id for m in got}) == 4
    assert_matches([got], brute_force([many, *others], probe, 4, "best", "float32"))


TWO_FACES = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)  # one person, two unlike photos


@pytest.mark.parametrize(
    "match, probe, expected",
    [
        ("best", [1.0, 0.0, 0.0], 0.0),  # equals one of the photos
        ("mean", [1.0, 0.0, 0.0], 2 - np.sqrt(2)),  # template is (1, 1, 0) / sqrt(2)
        ("mean", [0.70710677, 0.70710677, 0.0], 0.0),
        ("best", [0.70710677, 0.70710677, 0.0], 2 - np.sqrt(2)),
    ],
)
def test_mean_versus_best_matching(match: str, probe: list[float], expected: float) -> None:
    index = GalleryIndex(match=match)  # type: ignore[arg-type]
    index.upsert("ada", "Ada", TWO_FACES)
    (got,) = index.search(np.array([probe], np.float32), k=1)
    assert got[0].name == "Ada" and got[0].distance == pytest.approx(expected, abs=1e-5)


def test_int8_recall_against_float32() -> None:
    gallery = unit_vectors(20_000, 128, seed=1)
    ids = [str(i) for i in range(len(gallery))]
    exact = GalleryIndex.from_arrays(ids, ids, gallery)
    coded = GalleryIndex.from_arrays(ids, ids, gallery, dtype="int8")
    src = np.arange(0, 20_000, 40)
    probes = noisy(gallery[src], 0.45, 7)  # a second photo: squared distance ~0.4
    top_exact = [r[0].identity_id for r in exact.search(probes, k=1)]
    top_coded = [r[0].identity_id for r in coded.search(probes, k=1)]
    assert top_exact == [str(i) for i in src]
    assert np.mean([a == b for a, b in zip(top_exact, top_coded, strict=True)]) >= 0.99
    assert coded.nbytes < exact.nbytes  # codes are 4x smaller; a bounded widening buffer comes on top


def test_updates_match_a_rebuild() -> None:
    people = make_people(200, [1, 3])
    index = GalleryIndex(match="best", dtype="int8")
    index.add_many(people)
    for i in range(0, 200, 3):
        assert index.remove(f"id{i}")
    assert not index.remove("id0")
    changed = [
        IdentityRows("id1", "Renamed", unit_vectors(2, seed=50)),
        IdentityRows("new", "New", unit_vectors(1, seed=51)),
    ]
    index.add_many(changed)
    kept = [p for i, p in enumerate(people) if i % 3 and i != 1] + changed
    rebuilt = GalleryIndex(match="best", dtype="int8")
    rebuilt.add_many(kept)
    probes = unit_vectors(16, seed=4)
    assert len(index) == len(rebuilt) == len(kept) and index.rows == rebuilt.rows
    got, want = index.search(probes, k=10), rebuilt.search(probes, k=10)
    assert [[(m.identity_id, m.name) for m in r] for r in got] == [
        [(m.identity_id, m.name) for m in r] for r in want
    ]


def test_identify_applies_the_threshold() -> None:
    index = GalleryIndex(threshold=0.5)
    index.upsert("ada", "Ada", unit_vectors(1, seed=1))
    probes = np.concatenate([noisy(unit_vectors(1, seed=1), 0.1, 2), unit_vectors(1, seed=3)])
    ada, stranger = index.identify(probes)
    assert ada is not None and ada.name == "Ada" and stranger is None


def test_empty_index_and_small_gallery() -> None:
    index = GalleryIndex(dim=128)
    assert index.search(unit_vectors(2), k=3) == [[], []]
    index.upsert("a", "A", unit_vectors(1))
    assert [len(r) for r in index.search(unit_vectors(2), k=3)] == [1, 1]


BAD: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("probe dim", {"probes": unit_vectors(1, 16)}, IncompatibleModels),
    ("model version", {"probes": unit_vectors(1), "model_version": "v2"}, IncompatibleModels),
    ("integer probes", {"probes": np.ones((1, 128), np.int64)}, InputError),
    ("3-D probes", {"probes": np.ones((1, 1, 128), np.float32)}, InputError),
    ("NaN probe", {"probes": np.full((1, 128), np.nan, np.float32)}, InputError),
    ("k = 0", {"probes": unit_vectors(1), "k": 0}, InputError),
]


@pytest.mark.parametrize("case, kwargs, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_search_input(case: str, kwargs: dict[str, Any], expected: type[Exception]) -> None:
    index = GalleryIndex("v1")
    index.upsert("a", "A", unit_vectors(2))
    with pytest.raises(expected):
        index.search(**kwargs)


def test_rows_of_another_dimension_are_refused() -> None:
    index = GalleryIndex("v1", dim=128)
    with pytest.raises(IncompatibleModels):
        index.upsert("a", "A", unit_vectors(1, 64))


def test_sync_needs_a_store() -> None:
    with pytest.raises(GalleryError, match=r"GalleryIndex\.load"):
        GalleryIndex().sync()
