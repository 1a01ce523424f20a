"""An erasure erases on disk too: after ``delete`` (and ``forget_unknowns``) neither the person's name
nor their embedding bytes are left in the server's data files (the AOF is rewritten), on Debian's
redis-server and on the embedded valkey-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamproc.gallery.embedded import connect
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.retry import ConstantBackoff, Retry

NAME = "Zelda Quintero-Marsh"
MV = "facenet-test"


def data_files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_socket()}


def hits(folder: Path, needle: bytes) -> list[str]:
    return [p.name for p, data in data_files(folder).items() if needle in data]


def test_delete_and_forget_leave_no_trace_in_the_data_files(crash_server: Any) -> None:
    store = RedisGalleryStore(
        connect(crash_server.url), prefix="erase", retry=Retry(ConstantBackoff(0.0), attempts=1)
    )
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((4, 64)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    person, stranger = rows[:3], rows[3]
    store.enroll(NAME, person, MV)
    store.enroll("Ada Lovelace", -person, MV)
    store.add_unknown(stranger, MV, {"stream": "cam"})
    folder = Path(crash_server.data_dir)
    needles = {
        "name": NAME.encode(),
        "embedding": person[1].tobytes()[:32],
        "unknown": stranger.tobytes()[:32],
    }
    assert all(hits(folder, needle) for needle in needles.values())  # written through (appendfsync always)

    store.delete(NAME)
    store.forget_unknowns(0.0)
    left = {what: hits(folder, needle) for what, needle in needles.items()}
    assert left == {"name": [], "embedding": [], "unknown": []}, left
    assert hits(folder, b"Ada Lovelace")  # the others are kept
    assert [i.name for i in store.list_identities()] == ["Ada Lovelace"]
    store.close()
