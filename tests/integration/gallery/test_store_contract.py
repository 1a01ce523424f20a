"""What every ``GalleryStore`` does, run on each: in memory, Debian redis-server, the embedded server.

``make_any_store`` returns stores of one gallery; a Redis store is also checked with ``verify``.
The Redis-only parts (keys on the server, transactions, crashes) stay in ``test_redis_store.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streamproc.errors import GalleryError, InputError, UnknownIdentity
from streamproc.gallery.base import GalleryStore
from streamproc.gallery.cluster import cluster_unknowns, promote
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.redis_store import RedisGalleryStore
from tests.integration.gallery.test_redis_store import DIM, MV, crops, keys_of, near, unit_vectors

pytestmark = pytest.mark.integration
AnyFactory = Callable[..., GalleryStore]


def consistent(store: GalleryStore) -> bool:
    return not isinstance(store, RedisGalleryStore) or store.verify() == []


def state(store: GalleryStore) -> tuple[Any, ...]:
    """What a refused call must leave as it was (in Redis: every key too)."""
    keys = keys_of(store) if isinstance(store, RedisGalleryStore) else set()
    return store.list_identities(), store.head(), store.model_versions(), store.unknowns(MV).ids, keys


def assert_same_index(a: GalleryIndex, b: GalleryIndex, probes: np.ndarray) -> None:
    assert len(a) == len(b) and a.rows == b.rows
    for ra, rb in zip(a.search(probes, k=3), b.search(probes, k=3), strict=True):
        assert [(m.identity_id, m.name) for m in ra] == [(m.identity_id, m.name) for m in rb]
        np.testing.assert_allclose([m.distance for m in ra], [m.distance for m in rb], atol=1e-5)


# --- identities ---------------------------------------------------------------------------------------------
def test_enroll_get_list_and_append(make_any_store: AnyFactory) -> None:
    store = make_any_store()
    ada = store.enroll("Ada", unit_vectors(3), MV, metadata={"team": "math"})
    assert ada.embeddings == {MV: 3} and ada.metadata == {"team": "math"}
    again = store.enroll("Ada", unit_vectors(2, seed=1), MV)
    assert again.id == ada.id and again.embeddings == {MV: 5} and again.metadata == {"team": "math"}
    replaced = store.enroll("Ada", unit_vectors(1, seed=2), MV, replace=True)
    assert replaced.embeddings == {MV: 1}
    np.testing.assert_allclose(store.embeddings("Ada", MV), unit_vectors(1, seed=2), atol=1e-6)
    store.enroll("Bob", unit_vectors(1, seed=3), MV)
    assert [i.name for i in store.list_identities()] == ["Ada", "Bob"]
    assert store.get("Ada") == replaced
    assert store.model_versions() == {MV: DIM}
    assert store.set_metadata("Bob", {"x": 1}).metadata == {"x": 1}
    assert [e.op for e in store.changes_since("0-0").events] == ["enroll"] * 4 + ["update"]
    assert consistent(store)


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-6), ("int8", 0.02)])
def test_rows_come_back_as_float32_within_the_storage_error(
    make_any_store: AnyFactory, dtype: str, atol: float
) -> None:
    store = make_any_store(dtype=dtype)
    emb = unit_vectors(4, 128)
    store.enroll("Ada", emb, MV)
    back = store.embeddings("Ada", MV)
    assert back.dtype == np.float32 and back.shape == (4, 128)
    np.testing.assert_allclose(back, emb, atol=atol)
    (rows,) = next(store.snapshot(MV))
    assert rows.rows.dtype == np.dtype(dtype)  # replicas get the stored dtype


@pytest.mark.parametrize("retain, expected", [(False, 0), (True, 3)])
def test_crops_only_when_retained(make_any_store: AnyFactory, retain: bool, expected: int) -> None:
    store = make_any_store(retain_crops=retain)
    assert store.enroll("Ada", unit_vectors(3), MV, crops=crops(3)).crops == expected
    got = store.crops("Ada")
    assert sum(len(c) for c in got) == expected
    if retain:
        np.testing.assert_array_equal(got[0], crops(3))


def test_enroll_many_appends_to_people_already_there(make_any_store: AnyFactory) -> None:
    store = make_any_store()
    store.enroll("Person 2", unit_vectors(1, seed=99), MV)
    people = [(f"Person {i}", unit_vectors(1, seed=i)) for i in range(5)]
    made = store.enroll_many(people, MV, batch_size=2)
    assert [p.name for p in made] == [name for name, _ in people]
    assert store.get("Person 2").embeddings == {MV: 2}  # existing person: rows appended
    assert len(store.list_identities()) == 5 and consistent(store)


def test_delete_erases_every_model_version_and_logs_the_id_only(make_any_store: AnyFactory) -> None:
    store = make_any_store(retain_crops=True)
    ada = store.enroll("Ada", unit_vectors(2), MV, crops=crops(2))
    store.enroll("Ada", unit_vectors(1, 32), "other-model")
    erased = store.delete("Ada")
    assert erased.id == ada.id and erased.embeddings == {MV: 2, "other-model": 1}
    with pytest.raises(UnknownIdentity):
        store.get("Ada")
    assert store.fetch([ada.id], MV) == {} and list(store.snapshot("other-model")) == []
    last = store.changes_since("0-0").events[-1]
    assert (last.op, last.identity_id, last.model_version) == ("delete", ada.id, "")
    assert consistent(store)


# --- bad input ----------------------------------------------------------------------------------------------
BAD_INPUT: list[tuple[str, Callable[[GalleryStore], Any], type[Exception]]] = [
    ("1-D embeddings", lambda s: s.enroll("Ada", unit_vectors(1)[0], MV), InputError),
    ("empty batch", lambda s: s.enroll("Ada", np.zeros((0, DIM), np.float32), MV), InputError),
    ("wrong dim for model", lambda s: s.enroll("Bob", unit_vectors(2, DIM + 1), MV), InputError),
    ("wrong dim in bulk", lambda s: s.enroll_many([("Cy", unit_vectors(1, DIM + 1))], MV), InputError),
    ("wrong dim unknown", lambda s: s.add_unknown(unit_vectors(1, DIM + 1)[0], MV), InputError),
    ("not unit length", lambda s: s.enroll("Ada", 2 * unit_vectors(2), MV), InputError),
    ("NaN", lambda s: s.enroll("Ada", np.full((1, DIM), np.nan, np.float32), MV), InputError),
    ("int8 given", lambda s: s.enroll("Ada", np.ones((1, DIM), np.int8), MV), InputError),
    ("empty name", lambda s: s.enroll("", unit_vectors(1), MV), InputError),
    ("blank name", lambda s: s.enroll("   ", unit_vectors(1), MV), InputError),
    ("control char in name", lambda s: s.enroll("A\x00da", unit_vectors(1), MV), InputError),
    ("name not a string", lambda s: s.enroll(42, unit_vectors(1), MV), InputError),  # type: ignore[arg-type]
    ("bad model version", lambda s: s.enroll("Ada", unit_vectors(1), "v 1"), InputError),
    ("crops count", lambda s: s.enroll("Ada", unit_vectors(2), MV, crops=crops(3)), InputError),
    ("crops dtype", lambda s: s.enroll("Ada", unit_vectors(1), MV, crops=np.zeros((1, 8, 8, 3))), InputError),
    (
        "metadata not JSON",
        lambda s: s.enroll("Ada", unit_vectors(1), MV, metadata={"t": object()}),
        InputError,
    ),
    (
        "duplicate in bulk",
        lambda s: s.enroll_many([("X", unit_vectors(1)), ("X", unit_vectors(1))], MV),
        InputError,
    ),
    ("delete unknown name", lambda s: s.delete("Nobody"), UnknownIdentity),
    ("get unknown name", lambda s: s.get("Nobody"), UnknownIdentity),
    ("no rows for model", lambda s: s.embeddings("Bob", "other-model"), UnknownIdentity),
    ("metadata of unknown name", lambda s: s.set_metadata("Nobody", {}), UnknownIdentity),
    ("promote nothing", lambda s: s.promote_unknowns([], "Cy", MV), InputError),
    ("promote missing faces", lambda s: s.promote_unknowns(["0bad"], "Cy", MV), GalleryError),
    ("forget a negative age", lambda s: s.forget_unknowns(-1), InputError),
]


@pytest.mark.parametrize("case, call, expected", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_and_writes_nothing(
    make_any_store: AnyFactory, case: str, call: Callable[[GalleryStore], Any], expected: type[Exception]
) -> None:
    store = make_any_store()
    store.enroll("Bob", unit_vectors(1, seed=5), MV)
    before = state(store)
    with pytest.raises(expected):
        call(store)
    assert state(store) == before
    assert consistent(store)


# --- change log and replicas --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("match", ["mean", "best"])
def test_replica_follows_the_change_log(make_any_store: AnyFactory, dtype: str, match: str) -> None:
    writer, reader = make_any_store(dtype=dtype), make_any_store(dtype=dtype)
    base = unit_vectors(6, 64, seed=11)
    writer.enroll("Ada", near(base[0], 2, 1), MV)
    writer.enroll("Bob", near(base[1], 2, 2), MV)
    replica = GalleryIndex.load(reader, MV, dtype=dtype, match=match)
    assert len(replica) == 2
    writer.enroll("Cy", near(base[2], 3, 3), MV)
    writer.enroll("Ada", near(base[0], 1, 4), MV)  # more rows
    writer.delete("Bob")
    writer.enroll("Bob", near(base[3], 1, 5), MV)  # a new person under an old name
    writer.enroll_many([("Di", near(base[4], 1, 6)), ("Ed", near(base[5], 1, 7))], MV)
    writer.enroll("Other model", unit_vectors(1, 32), "another-model")
    writer.set_metadata("Cy", {"x": 1})
    assert replica.sync() > 0
    fresh = GalleryIndex.load(reader, MV, dtype=dtype, match=match)
    assert len(replica) == 5
    assert_same_index(replica, fresh, np.concatenate([base, unit_vectors(4, 64, seed=12)]))
    assert replica.cursor == reader.head()
    assert replica.sync() == 0  # nothing new; replaying is idempotent
    replica.apply(reader.changes_since("0-0"))
    assert_same_index(replica, fresh, base)


def test_replica_reloads_after_the_log_was_trimmed(make_any_store: AnyFactory) -> None:
    writer = make_any_store(changelog_maxlen=10)
    writer.enroll("Seed", unit_vectors(1, seed=1), MV)
    replica = GalleryIndex.load(writer, MV)
    assert not writer.changes_since(replica.cursor).gap
    for i in range(300):
        writer.enroll(f"P{i}", unit_vectors(1, seed=100 + i), MV)
    writer.delete("Seed")
    changes = writer.changes_since(replica.cursor)
    assert changes.gap and len(changes.events) < 301
    replica.sync()
    assert_same_index(replica, GalleryIndex.load(writer, MV), unit_vectors(8, seed=3))
    assert len(replica) == 300


def test_blocking_read_returns_when_a_change_arrives(make_any_store: AnyFactory) -> None:
    writer, reader = make_any_store(), make_any_store()
    cursor = reader.head()
    assert reader.changes_since(cursor, block_ms=50).events == []  # nothing comes: the wait ends
    timer = threading.Timer(0.2, lambda: writer.enroll("Ada", unit_vectors(1), MV))
    timer.start()
    started = time.monotonic()
    changes = reader.changes_since(cursor, block_ms=60_000)
    timer.join()
    assert [e.op for e in changes.events] == ["enroll"]
    assert time.monotonic() - started < 30  # woken by the change, long before the 60 s timeout


# --- unknown faces ------------------------------------------------------------------------------------------
def test_cluster_and_promote_unknown_faces(make_any_store: AnyFactory) -> None:
    store = make_any_store()
    centres = unit_vectors(3, 64, seed=21)
    for c, n in ((0, 4), (1, 3), (2, 1)):
        for row in near(centres[c], n, seed=30 + c):
            store.add_unknown(row, MV, {"stream": "cam1"})
    clusters = cluster_unknowns(store, MV, GalleryConfig(cluster_threshold=0.3))
    assert [c.size for c in clusters] == [4, 3]
    assert clusters[0].meta[0]["stream"] == "cam1"
    ada = promote(store, clusters[0], "Ada")
    assert ada.embeddings == {MV: 4}
    assert len(store.unknowns(MV).ids) == 4
    with pytest.raises(GalleryError):
        promote(store, clusters[0], "Ada again")  # already promoted
    assert store.delete_unknowns(MV, store.unknowns(MV).ids) == 4
    assert consistent(store)


def test_forget_unknowns_erases_only_those_past_the_age(make_any_store: AnyFactory) -> None:
    store = make_any_store()
    rows = unit_vectors(3, 64, seed=40)
    store.add_unknown(rows[0], MV, {"stream": "cam1"})
    store.add_unknown(rows[1], "v-other", {"stream": "cam2"})  # another model version's unknowns too
    time.sleep(0.3)
    kept_after = time.time()
    store.add_unknown(rows[2], MV, {"stream": "cam1"})
    older_than = time.time() - kept_after + 0.1  # between the first two and the last
    assert store.forget_unknowns(older_than) == 2
    left = store.unknowns(MV)
    assert len(left.ids) == 1 and np.allclose(left.embeddings[0], rows[2], atol=1e-6)
    assert store.unknowns("v-other").ids == []
    assert store.forget_unknowns(0) == 1 and store.unknowns(MV).ids == []
    assert consistent(store)


def test_calibration_is_kept_per_model_version(make_any_store: AnyFactory) -> None:
    store = make_any_store()
    assert store.calibration(MV) is None
    store.set_calibration(MV, {"threshold": 0.9, "fpir": 0.01})
    assert store.calibration(MV) == {"threshold": 0.9, "fpir": 0.01}
    assert store.calibration("another-model") is None
