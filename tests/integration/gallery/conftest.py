"""Real servers for the gallery store tests: Debian's redis-server and our EmbeddedRedis (valkey-server).

``server`` is session-scoped and parametrised over both kinds; each test gets its own key prefix, so
tests share a server without seeing each other. ``make_any_store`` adds the in-memory store to the
two, for the contract every ``GalleryStore`` keeps. ``crash_server`` starts a private server in the
test's tmp dir, for tests that SIGKILL and restart it.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis

from streamproc.gallery.base import GalleryStore
from streamproc.gallery.embedded import EmbeddedRedis, connect
from streamproc.gallery.memory import MemoryGalleryStore
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.retry import ConstantBackoff, Retry

KINDS = ["redis-server", "embedded"]


class Server(Protocol):
    url: str

    def kill(self) -> None: ...

    def start(self) -> str: ...

    def stop(self) -> None: ...


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the test process dies without its teardown."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DebianRedis:
    """``redis-server`` from the OS on a free loopback port, AOF (fsync always) in ``data_dir``."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.data_dir), "--logfile", "redis.log"],
            cwd=self.data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self.url
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.data_dir}/redis.log")

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=15)
            self._proc = None


def make_server(kind: str, data_dir: Path) -> Server:
    return DebianRedis(data_dir) if kind == "redis-server" else EmbeddedRedis(data_dir)


class Servers:
    """The session's shared servers, one per kind, each started when a test first needs it."""

    def __init__(self, root: pytest.TempPathFactory):
        self.root = root
        self.started: dict[str, Server] = {}

    def get(self, kind: str) -> Server:
        if kind not in self.started:
            srv = make_server(kind, self.root.mktemp(kind))
            srv.start()
            self.started[kind] = srv
        return self.started[kind]


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    shared = Servers(tmp_path_factory)
    yield shared
    for srv in shared.started.values():
        srv.stop()


@pytest.fixture(scope="session", params=KINDS)
def server(request: pytest.FixtureRequest, servers: Servers) -> Server:
    return servers.get(request.param)


@pytest.fixture(params=KINDS)
def crash_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = make_server(request.param, tmp_path / "srv")
    srv.start()
    yield srv
    srv.stop()


def fast_retry() -> Retry:
    return Retry(ConstantBackoff(0.0), attempts=1)


StoreFactory = Callable[..., RedisGalleryStore]


@contextlib.contextmanager
def redis_stores(server: Server) -> Iterator[StoreFactory]:
    """Stores on the session server under a prefix unique to the test; keys are removed afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    made: list[RedisGalleryStore] = []

    def factory(**kwargs: object) -> RedisGalleryStore:
        kwargs.setdefault("prefix", prefix)
        kwargs.setdefault("retry", fast_retry())
        store = RedisGalleryStore(connect(server.url), **kwargs)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield factory
    client = connect(server.url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()
    for store in made:
        store.close()


@pytest.fixture
def make_store(server: Server) -> Iterator[StoreFactory]:
    with redis_stores(server) as factory:
        yield factory


@pytest.fixture
def store(make_store: StoreFactory) -> RedisGalleryStore:
    return make_store()


@pytest.fixture(params=["memory", *KINDS])
def make_any_store(request: pytest.FixtureRequest, servers: Servers) -> Iterator[Callable[..., GalleryStore]]:
    """Stores of one gallery (``dtype``, ``retain_crops``, ``changelog_maxlen`` as keywords): in
    memory (every call returns the same store), or in Redis under one prefix as ``make_store``."""
    if request.param != "memory":
        with redis_stores(servers.get(request.param)) as factory:
            yield factory
        return
    made: list[MemoryGalleryStore] = []

    def memory(**kwargs: Any) -> MemoryGalleryStore:
        if not made:
            made.append(MemoryGalleryStore(**kwargs))
        return made[0]

    yield memory
