"""The IVF path and the torch exact path of ``GalleryIndex`` against brute force, through updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamproc.gallery.ann import AnnOptions
from streamproc.gallery.base import IdentityRows
from streamproc.gallery.index import GalleryIndex
from tests.unit.gallery.test_index import assert_matches, brute_force, make_people, noisy

SCAN_ALL = AnnOptions(min_size=100, nlist=16, nprobe=16, candidates=64, storage="flat")


def probes_of(people: list[IdentityRows], every: int = 97) -> np.ndarray:
    return noisy(np.concatenate([p.rows[:1] for p in people[::every]]), 0.3, 11)


def churn(index: GalleryIndex, people: list[IdentityRows]) -> list[IdentityRows]:
    """Remove every 7th person, re-enrol every 11th with new rows, add 50 newcomers; the people left."""
    rng = np.random.default_rng(3)
    for person in people[::7]:
        assert index.remove(person.identity_id)
    kept = [p for i, p in enumerate(people) if i % 7]
    replaced = {
        p.identity_id: IdentityRows(p.identity_id, p.name, noisy(p.rows, 0.1, int(rng.integers(1e6))))
        for p in kept[::11]
    }
    newcomers = [
        IdentityRows(f"new{i}", f"New {i}", p.rows) for i, p in enumerate(make_people(50, [1, 2], seed=77))
    ]
    index.add_many([*replaced.values(), *newcomers])
    return [replaced.get(p.identity_id, p) for p in kept] + newcomers


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("match", ["mean", "best"])
@pytest.mark.parametrize("storage", ["flat", "sq8"])
def test_ivf_scanning_every_cell_equals_brute_force_through_churn(
    dtype: str, match: str, storage: str
) -> None:
    people = make_people(1500, [1, 2, 5])
    options = AnnOptions(min_size=100, nlist=16, nprobe=16, candidates=64, storage=storage)  # type: ignore[arg-type]
    index = GalleryIndex("v1", dtype=dtype, match=match, ann=options)  # type: ignore[arg-type]
    index.add_many(people)
    assert index.kind == "ivf"
    probes = probes_of(people)
    assert_matches(index.search(probes, k=5), brute_force(people, probes, 5, match, dtype))
    left = churn(index, people)
    probes = probes_of(left, 53)
    assert_matches(index.search(probes, k=5), brute_force(left, probes, 5, match, dtype))


def test_removed_person_is_never_a_candidate() -> None:
    people = make_people(1000, [1])
    index = GalleryIndex("v1", ann=SCAN_ALL)
    index.add_many(people)
    victims = people[::10]
    probes = np.concatenate([v.rows for v in victims])  # their exact enrolled rows: distance 0
    assert [r[0].identity_id for r in index.search(probes, k=1)] == [v.identity_id for v in victims]
    for victim in victims:
        index.remove(victim.identity_id)
    gone = {v.identity_id for v in victims}
    results = index.search(probes, k=10)
    assert all(len(r) == 10 and not gone & {m.identity_id for m in r} for r in results)
    left = [p for p in people if p.identity_id not in gone]
    assert_matches(results, brute_force(left, probes, 10, "mean", "float32"))


def test_small_gallery_searches_exactly_and_switches_to_ivf_at_min_size() -> None:
    people = make_people(300, [1])
    index = GalleryIndex("v1", ann=AnnOptions(min_size=200, nlist=8, nprobe=8))
    index.add_many(people[:150])
    assert index.kind == "exact"
    index.add_many(people[150:])
    assert index.kind == "ivf"
    assert GalleryIndex("v1", ann=None).kind == "exact"


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("match", ["mean", "best"])
def test_torch_exact_path_on_cpu_equals_brute_force_through_churn(dtype: str, match: str) -> None:
    people = make_people(1200, [1, 2, 5])
    index = GalleryIndex("v1", dtype=dtype, match=match, device="cpu")  # type: ignore[arg-type]
    index.add_many(people)
    assert index.kind == "gpu"
    index._gpu.chunk_rows = 1024  # type: ignore[union-attr]  # several chunks: exercises the merge
    probes = probes_of(people)
    assert_matches(index.search(probes, k=5), brute_force(people, probes, 5, match, dtype))
    left = churn(index, people)
    probes = probes_of(left, 41)
    assert_matches(index.search(probes, k=5), brute_force(left, probes, 5, match, dtype))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_exact_path_on_cuda_equals_brute_force() -> None:
    people = make_people(3000, [1, 3])
    index = GalleryIndex("v1", device="cuda")
    index.add_many(people)
    probes = probes_of(people, 31)
    assert_matches(index.search(probes, k=5), brute_force(people, probes, 5, "mean", "float32"))
