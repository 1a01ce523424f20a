"""The Redis gallery store against real servers (Debian redis-server and the embedded valkey-server):
what only Redis has (keys, transactions, crashes). What every store does is in ``test_store_contract.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from streamproc.errors import GalleryError, GalleryUnavailable, UnknownIdentity
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.embedded import EmbeddedRedis, connect, stop_embedded
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.retry import ConstantBackoff, Retry

pytestmark = pytest.mark.integration
MV = "facenet-test"
DIM = 16
Server = Any  # conftest's DebianRedis or EmbeddedRedis: url, start(), kill(), stop(), data_dir
StoreFactory = Callable[..., RedisGalleryStore]


def fast_retry() -> Retry:
    return Retry(ConstantBackoff(0.0), attempts=1)


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(v: np.ndarray, n: int, seed: int, noise: float = 0.05) -> np.ndarray:
    x = v[None, :] + noise * unit_vectors(n, len(v), seed)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def crops(n: int) -> np.ndarray:
    return np.full((n, 8, 8, 3), 7, np.uint8)


def keys_of(store: RedisGalleryStore) -> set[str]:
    return {k.decode() for k in store.client.scan_iter(match=store.key("*"), count=1000)}


# --- storage ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, atol", [("float32", 1e-6), ("int8", 0.02)])
def test_storage_dtype_round_trip(make_store: StoreFactory, dtype: str, atol: float) -> None:
    store = make_store(dtype=dtype)
    emb = unit_vectors(4, 128)
    store.enroll("Ada", emb, MV)
    back = store.embeddings("Ada", MV)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, emb, atol=atol)
    raw = store.client.hvals(store.key("emb", MV, store.get("Ada").id))
    assert sum(len(b) for b in raw) == 4 * 128 * (1 if dtype == "int8" else 4)


CORRUPTIONS: list[tuple[str, Callable[[RedisGalleryStore, str], Any], str]] = [
    ("name without identity", lambda s, i: s.client.delete(s.key("identity", i)), "missing"),
    ("identity without name", lambda s, i: s.client.hdel(s.key("names"), "Ada"), "orphan key"),
    (
        "rows without count",
        lambda s, i: s.client.hset(s.key("emb", MV, i), "x", b"\0" * 4 * DIM),
        "rows stored",
    ),
    ("not a member", lambda s, i: s.client.srem(s.key("model", MV, "members"), i), "member=False"),
    (
        "member without identity",
        lambda s, i: s.client.sadd(s.key("model", MV, "members"), "f00"),
        "no identity",
    ),
]


@pytest.mark.parametrize("case, corrupt, expected", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_verify_reports_torn_state(
    store: RedisGalleryStore, case: str, corrupt: Callable[[RedisGalleryStore, str], Any], expected: str
) -> None:
    ada = store.enroll("Ada", unit_vectors(2), MV)
    assert store.verify() == []
    corrupt(store, ada.id)
    assert any(expected in problem for problem in store.verify())


# --- atomicity ----------------------------------------------------------------------------------------------
WRITES: list[tuple[str, Callable[[RedisGalleryStore], Any]]] = [
    ("enroll new", lambda s: s.enroll("Ada", unit_vectors(3), MV, crops=crops(3), metadata={"a": 1})),
    ("enroll more", lambda s: s.enroll("Bob", unit_vectors(2, seed=8), MV, crops=crops(2))),
    ("enroll many", lambda s: s.enroll_many([("Cy", unit_vectors(1)), ("Di", unit_vectors(1))], MV)),
    ("delete", lambda s: s.delete("Bob")),
    ("promote", lambda s: s.promote_unknowns(s.unknowns(MV).ids, "Eve", MV)),
]


def dump(store: RedisGalleryStore) -> dict[str, bytes]:
    return {k: store.client.dump(k) for k in sorted(keys_of(store))}


def seeded_store(make_store: StoreFactory) -> RedisGalleryStore:
    store = make_store(retain_crops=True)
    store.enroll("Bob", unit_vectors(1, seed=7), MV, crops=crops(1))
    store.add_unknown(unit_vectors(1, seed=9)[0], MV)
    return store


@pytest.mark.parametrize("write, call", WRITES, ids=[w[0] for w in WRITES])
def test_connection_lost_before_exec_applies_nothing(
    make_store: StoreFactory,
    monkeypatch: pytest.MonkeyPatch,
    write: str,
    call: Callable[[RedisGalleryStore], Any],
) -> None:
    store = seeded_store(make_store)
    observer = make_store()
    before, seen = dump(store), []
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        data = b"".join(command) if isinstance(command, list) else command
        cut = data.rfind(b"*1\r\n$4\r\nEXEC\r\n")
        if cut < 0 or seen:
            return original(self, command, check_health)
        original(self, [data[:cut]], check_health)  # MULTI and every queued command, no EXEC
        self.disconnect()
        time.sleep(0.05)  # let the server notice the closed connection
        seen.append(dump(observer))
        raise redis.ConnectionError("injected: connection lost before EXEC")

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    call(store)  # redis-py re-runs the WATCH transaction on a new connection
    assert seen == [before]
    monkeypatch.undo()
    assert store.verify() == []
    assert len(store.changes_since("0-0").events) == 1 + {"enroll many": 2}.get(write, 1)


@pytest.mark.parametrize("write, call", WRITES, ids=[w[0] for w in WRITES])
def test_transaction_with_a_refused_command_applies_nothing(
    make_store: StoreFactory,
    monkeypatch: pytest.MonkeyPatch,
    write: str,
    call: Callable[[RedisGalleryStore], Any],
) -> None:
    store = seeded_store(make_store)
    before = dump(store)
    original = RedisGalleryStore._log

    def log(self: RedisGalleryStore, pipe: Any, *args: Any) -> None:
        original(self, pipe, *args)
        pipe.execute_command("XADD", self.key("changes"))  # wrong arity: refused while queued

    monkeypatch.setattr(RedisGalleryStore, "_log", log)
    with pytest.raises(GalleryError, match=r"EXECABORT|wrong number"):
        call(store)
    assert dump(store) == before
    monkeypatch.undo()
    call(store)
    assert store.verify() == []


def test_retried_enroll_after_lost_reply_is_applied_once(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(retry=Retry(ConstantBackoff(0.0), attempts=3))
    original = redis.client.Pipeline._execute_transaction
    lost = []

    def execute(self: Any, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        result = original(self, connection, commands, raise_on_error)
        if not lost:  # the server applied it, but the reply never arrives
            lost.append(1)
            raise redis.ConnectionError("injected: reply lost")
        return result

    monkeypatch.setattr(redis.client.Pipeline, "_execute_transaction", execute)
    assert store.enroll("Ada", unit_vectors(2), MV).embeddings == {MV: 2}
    assert store.get("Ada").embeddings == {MV: 2}
    assert len(store.changes_since("0-0").events) == 1


# --- erasure ------------------------------------------------------------------------------------------------
def test_erasure_leaves_no_key_or_value_behind(make_store: StoreFactory) -> None:
    store = make_store(retain_crops=True)
    for mv in (MV, "facenet-next"):
        store.enroll("Bob", unit_vectors(2, seed=1), mv, crops=crops(2))
    before = keys_of(store)
    ada = store.enroll("Ada Lovelace", unit_vectors(3, seed=2), MV, crops=crops(3), metadata={"k": "v"})
    store.enroll("Ada Lovelace", unit_vectors(2, seed=3), "facenet-next", crops=crops(2))
    assert store.delete("Ada Lovelace").id == ada.id
    assert keys_of(store) == before
    for key in before:
        kind = store.client.type(key).decode()
        if kind == "hash":
            blob = b"".join(k + v for k, v in store.client.hgetall(key).items())
        elif kind == "set":
            blob = b"".join(store.client.smembers(key))
        else:
            entries = store.client.xrange(key)
            blob = b"".join(v for _, f in entries for v in f.values() if v != ada.id.encode())
        assert ada.id.encode() not in blob and b"Ada" not in blob, key
    log = store.changes_since("0-0").events
    assert log[-1].op == "delete" and log[-1].identity_id == ada.id and log[-1].model_version == ""
    assert store.verify() == []
    with pytest.raises(UnknownIdentity):
        store.get("Ada Lovelace")


# --- durability ---------------------------------------------------------------------------------------------
def _reconnect(srv: Server, **kwargs: Any) -> RedisGalleryStore:
    srv.start()
    return RedisGalleryStore(connect(srv.url), prefix="crash", retry=fast_retry(), **kwargs)


def test_acknowledged_enrollment_survives_sigkill(crash_server: Server) -> None:
    store = _reconnect(crash_server)
    emb = unit_vectors(3)
    ada = store.enroll("Ada", emb, MV)
    crash_server.kill()  # right after the acknowledgement
    with pytest.raises(GalleryUnavailable):
        store.get("Ada")
    store = _reconnect(crash_server)
    assert store.get("Ada").id == ada.id
    np.testing.assert_allclose(store.embeddings("Ada", MV), emb, atol=1e-6)


def test_sigkill_during_enrollments_leaves_no_half_written_identity(crash_server: Server) -> None:
    store = _reconnect(crash_server, retain_crops=True)
    acknowledged: list[str] = []
    stop = threading.Event()
    big_crops = np.random.default_rng(0).integers(0, 255, (16, 96, 96, 3), dtype=np.uint8)

    def enrol_forever() -> None:
        i = 0
        while not stop.is_set():
            try:
                store.enroll(f"P{i}", unit_vectors(16, seed=i), MV, crops=big_crops)
            except GalleryUnavailable:
                return
            acknowledged.append(f"P{i}")
            i += 1

    worker = threading.Thread(target=enrol_forever)
    worker.start()
    while len(acknowledged) < 5:
        time.sleep(0.005)
    crash_server.kill()
    stop.set()
    worker.join(timeout=30)
    store = _reconnect(crash_server, retain_crops=True)
    names = {i.name for i in store.list_identities()}
    assert set(acknowledged) <= names <= set(acknowledged) | {f"P{len(acknowledged)}"}
    assert store.verify() == []
    for name in names:
        assert store.get(name).embeddings == {MV: 16} and store.get(name).crops == 16


def _last_aof(data_dir: Path) -> Path:
    files = sorted(data_dir.glob("appendonlydir/*.incr.aof"), key=lambda p: int(p.name.split(".")[-3]))
    assert files, f"no AOF under {data_dir}"
    return files[-1]


def test_torn_aof_write_reverts_the_whole_enrollment(crash_server: Server) -> None:
    store = _reconnect(crash_server)
    store.enroll("Ada", unit_vectors(2), MV)
    store.enroll("Bob", unit_vectors(2, seed=1), MV)
    crash_server.kill()
    aof = _last_aof(Path(crash_server.data_dir))
    data = aof.read_bytes()
    multi = data.rfind(b"*1\r\n$5\r\nMULTI\r\n")
    assert multi > 0
    aof.write_bytes(data[: multi + (len(data) - multi) // 2])  # the crash tore Bob's transaction
    store = _reconnect(crash_server)
    assert [i.name for i in store.list_identities()] == ["Ada"]
    assert store.verify() == []
    assert [e.op for e in store.changes_since("0-0").events] == ["enroll"]


# --- embedded server ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_embedded_server_is_shared_per_folder_and_persists(tmp_path: Path, transport: Any) -> None:
    owner = EmbeddedRedis(tmp_path / "gallery", transport=transport)
    url = owner.start()
    other = EmbeddedRedis(tmp_path / "gallery")
    assert other.start() == url and not other.owner  # a second process would attach the same way
    client = connect(url)
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.set("k", "v")
    client.close()
    other.stop()  # not the owner: the server keeps running
    assert connect(url).ping()
    owner.stop()
    assert not owner.running and not (tmp_path / "gallery" / "embedded.json").exists()
    with EmbeddedRedis(tmp_path / "gallery", transport=transport) as again:
        assert connect(again.url).get("k") == b"v"


def test_from_config_without_url_starts_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMPROC_REDIS_URL", raising=False)
    try:
        store = RedisGalleryStore.from_config(GalleryConfig(embedded_dir=tmp_path / "emb"))
        store.enroll("Ada", unit_vectors(1), MV)
        assert store.get("Ada").embeddings == {MV: 1}
        assert (tmp_path / "emb" / "appendonlydir").is_dir()
        store.close()
    finally:
        stop_embedded()


def test_unreachable_server_is_gallery_unavailable() -> None:
    store = RedisGalleryStore(
        redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5),
        retry=Retry(ConstantBackoff(0.0), attempts=2),
    )
    with pytest.raises(GalleryUnavailable, match=r"127\.0\.0\.1:1\b") as info:
        store.list_identities()
    assert info.value.retryable
