"""The event ids a sink remembers to drop replays: bounded, and small enough for months of events."""

from __future__ import annotations

import hashlib
import tracemalloc

from streamproc.stages.emit import IDS_REMEMBERED, RecentIds


def event_id(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:24]  # the shape of Decision.event_id


def test_a_million_ids_fit_in_a_few_megabytes_and_the_oldest_are_forgotten() -> None:
    n = IDS_REMEMBERED + IDS_REMEMBERED // 4
    tracemalloc.start()
    ids = RecentIds(IDS_REMEMBERED)
    for i in range(n):
        ids.add(event_id(i))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\nRecentIds holding the last {IDS_REMEMBERED:,} of {n:,} event ids: {held / 2**20:.1f} MiB")
    assert held < 16 * 2**20
    assert all(event_id(i) in ids for i in range(n - IDS_REMEMBERED, n, 997))
    assert not any(event_id(i) in ids for i in range(0, n - IDS_REMEMBERED - ids.chunk, 997))


def test_an_id_is_found_in_the_open_chunk_and_after_it_is_frozen() -> None:
    ids = RecentIds(capacity=4, chunk=2)
    ids.add(event_id(1))
    assert event_id(1) in ids and event_id(2) not in ids
    ids.add(event_id(2))  # the chunk is full: frozen into a sorted array
    ids.add(event_id(3))
    assert all(event_id(i) in ids for i in (1, 2, 3)) and event_id(4) not in ids
