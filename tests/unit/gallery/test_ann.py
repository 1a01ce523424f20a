"""The IVF-PQ scan, PQ scan, HNSW and IVF paths and the torch exact path of ``GalleryIndex`` against brute
force, through updates; the masked indexes' removal mask and their save/read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from streamproc.gallery.ann import AnnOptions
from streamproc.gallery.base import IdentityRows
from streamproc.gallery.hnsw import HnswIndex, HnswOptions
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.ivfpq import IvfPqScanIndex
from streamproc.gallery.pqscan import PqScanIndex
from tests.unit.gallery.test_index import assert_matches, brute_force, make_people, noisy, unit_vectors

SCAN_ALL = AnnOptions(min_size=100, kind="ivf", nlist=16, nprobe=16, candidates=64, storage="flat")
# a beam wider than the gallery: the walk reaches every node, so the candidates are the exact ones
WALK_ALL = AnnOptions(min_size=100, kind="hnsw", m=8, ef_search=4000, candidates=64)
PQ_WIDE = AnnOptions(min_size=100, kind="pq", candidates=8000)  # every row a candidate: ids, churn
IVFPQ_ALL = AnnOptions(min_size=100, kind="ivfpq", ivf_share=1.0, candidates=8000)  # every cell, every row


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
@pytest.mark.parametrize("kind", ["ivf", "hnsw", "pq", "ivfpq"])
def test_approximate_index_seeing_everything_equals_brute_force_through_churn(
    dtype: str, match: str, storage: str, kind: str
) -> None:
    people = make_people(1500, [1, 2, 5])
    base = {"ivf": SCAN_ALL, "hnsw": WALK_ALL, "pq": PQ_WIDE, "ivfpq": IVFPQ_ALL}[kind]
    index = GalleryIndex("v1", dtype=dtype, match=match, ann=replace(base, storage=storage))  # type: ignore[arg-type]
    index.add_many(people)
    assert index.kind == kind
    probes = probes_of(people)
    assert_matches(index.search(probes, k=5), brute_force(people, probes, 5, match, dtype))
    left = churn(index, people)
    probes = probes_of(left, 53)
    assert_matches(index.search(probes, k=5), brute_force(left, probes, 5, match, dtype))


@pytest.mark.parametrize(
    "options", [SCAN_ALL, WALK_ALL, PQ_WIDE, IVFPQ_ALL], ids=["ivf", "hnsw", "pq", "ivfpq"]
)
def test_removed_person_is_never_a_candidate(options: AnnOptions) -> None:
    people = make_people(1000, [1])
    index = GalleryIndex("v1", ann=options)
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


def test_small_gallery_searches_exactly_and_switches_to_ivfpq_at_min_size() -> None:
    people = make_people(300, [1])
    index = GalleryIndex("v1", ann=AnnOptions(min_size=200, m=8))
    index.add_many(people[:150])
    assert index.kind == "exact"
    index.add_many(people[150:])
    assert index.kind == "ivfpq"  # the default
    assert GalleryIndex("v1", ann=None).kind == "exact"


@pytest.mark.parametrize("cls", [HnswIndex, PqScanIndex, IvfPqScanIndex])
def test_masked_index_hides_removed_rows_adds_after_and_reads_back_what_it_saved(
    tmp_path: Path, cls: type[HnswIndex]
) -> None:
    rows = unit_vectors(600, seed=5)
    ann = cls.build(rows[:500], np.arange(1000, 1500), HnswOptions(m=8, ef_search=600, ivf_share=1.0))
    assert ann.search(rows[[3, 400]], 1).tolist() == [[1003], [1400]]
    assert ann.remove(np.array([1003, 1400, 1003, 99])) == 2  # twice and unknown: counted once, never
    ann.add(rows[500:], np.arange(2000, 2100))
    got = ann.search(rows[[3, 400, 550]], 500)
    assert not {1003, 1400} & set(got.ravel().tolist()) and got[2, 0] == 2050
    assert (got >= 0).all() and all(len(set(r)) == 500 for r in got.tolist())  # live nodes fill k
    ann.save(tmp_path / "g.faiss")
    back = cls.read(tmp_path / "g.faiss", ann.options)
    assert back.dead == 2 and len(back) == 600
    np.testing.assert_array_equal(back.search(rows[[3, 400, 550]], 500), got)
    assert back.remove(np.array([2050])) == 1 and 2050 not in back.search(rows[550:551], 10)
    assert not back.needs_rebuild(600) and back.remove(np.arange(1000, 1200)) == 199  # 1003 was already
    assert back.needs_rebuild(600)  # over a quarter of the nodes are dead


def test_every_node_of_a_graph_is_found_even_where_pruned_links_strand_it() -> None:
    """HNSW prunes level-0 links as the graph grows and can leave a node no walk reaches: an enrolled
    person no probe would ever find. With ``m=8`` about one build of 600 rows in 45 strands one; over
    200 insertion orders, with three people erased (the search then filters), every living node searched
    with its own row must come back first."""
    from streamproc.gallery.hnsw import unreachable

    rows = unit_vectors(600, seed=4)
    ids = np.arange(600) + 7000
    stranded_builds = 0
    for trial in range(200):
        order = np.random.default_rng(trial).permutation(600)
        ann = HnswIndex.build(rows[order], ids[order], HnswOptions(m=8, ef_search=64))
        stranded = unreachable(ann._index.hnsw, len(ann))  # type: ignore[attr-defined]  # an IndexHNSW
        stranded_builds += bool(len(stranded))
        ann.remove(ids[:3])
        alive = np.arange(3, 600)
        assert (ann.search(rows[alive], 1)[:, 0] == ids[alive]).all(), f"insertion order {trial}"
    assert stranded_builds >= 1  # the hard case happened: a stranded node was found and searched for


@pytest.mark.parametrize("kind", ["hnsw", "pq", "ivfpq"])
def test_removed_people_around_a_probe_do_not_crowd_out_the_living(kind: str) -> None:
    """Fifty look-alikes of one face, forty of them erased: the 32 candidates must all be living people,
    not graph nodes of the erased (filtered later, they would leave fewer than ``k`` matches)."""
    rng = np.random.default_rng(8)
    crowd = noisy(np.repeat(unit_vectors(1, seed=8), 50, 0), 0.05, 9)
    others = unit_vectors(2000, seed=10)
    options = AnnOptions(min_size=100, kind=kind, m=16, ef_search=64, candidates=32)  # type: ignore[arg-type]
    index = GalleryIndex("v1", ann=options)
    index.add_many([IdentityRows(f"c{i}", f"C {i}", crowd[i : i + 1]) for i in range(50)])
    index.add_many([IdentityRows(f"o{i}", f"O {i}", others[i : i + 1]) for i in range(2000)])
    erased = [f"c{i}" for i in rng.permutation(50)[:40]]
    for ident in erased:
        index.remove(ident)
    got = index.search(crowd[:5], k=20)
    assert all(len(r) == 20 and not set(erased) & {m.identity_id for m in r} for r in got)
    living = {f"c{i}" for i in range(50)} - set(erased)
    assert all({m.identity_id for m in r[:10]} == living for r in got)


@pytest.mark.parametrize("kind", ["hnsw", "pq", "ivfpq"])
def test_masked_index_rebuilds_from_live_rows_once_a_quarter_was_removed(kind: str) -> None:
    people = make_people(400, [1])
    options = AnnOptions(min_size=100, kind=kind, m=8, ef_search=800, candidates=200, ivf_share=1.0)  # type: ignore[arg-type]
    index = GalleryIndex("v1", ann=options)
    index.add_many(people)
    first = index._ann
    for person in people[:120]:
        index.remove(person.identity_id)
    index.add_many([])  # a sync after erasures: the index checks whether to rebuild
    assert index._ann is not first and index._ann is not None and len(index._ann) == 280
    probes = probes_of(people[120:], 17)
    assert_matches(index.search(probes, k=5), brute_force(people[120:], probes, 5, "mean", "float32"))


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
