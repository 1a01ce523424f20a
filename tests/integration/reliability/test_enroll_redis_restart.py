"""Redis restarted during enrollment: every enrollment completes (retried through the outage),
nothing acknowledged is lost, nothing is stored twice.

The server is Debian's ``redis-server`` on a free loopback port with AOF (``appendfsync always``)
in the test's folder (``redis_server`` in this folder's conftest). The outage is injected right
before an enrollment's write, so that write is the one that meets it:

* store level, with an injected ``Retry`` policy that waits up to ~20 s: the server is stopped
  (SIGTERM) or crashes (SIGKILL) and comes back ``OUTAGE_S`` later on the same port and AOF;
* ``streamproc enroll --folder`` with the product's default policy (``gallery.retry_s``, 10 s):
  the server crashes and is back ``OUTAGE_S`` later (as systemd's ``Restart=always`` would bring
  it), so the CLI's pooled connection is dead when it writes and its retries meet a closed port;
* the same command run twice (an operator's retry after a failure) stores every photo once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamproc.cli import main
from streamproc.gallery.embedded import connect
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.retry import ExponentialBackoff, Retry

pytestmark = pytest.mark.integration

MV = "facenet-test"
OUTAGE_S = 1.0
PEOPLE = ("ben_afflek", "jerry_seinfeld", "madonna", "mindy_kaling")  # two one-face photos each
Server = Any  # conftest's DebianRedis: url, port, start(), stop(), kill()


def rows(n: int, seed: int, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Outage:
    """Takes the server down when a writer thread reaches ``before_write()`` and brings it back
    ``down_s`` later. The server is restarted from the test's main thread: ``redis-server`` gets
    SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG), so never from a short thread.
    """

    def __init__(self, server: Server, how: str, down_s: float) -> None:
        self.server, self.how, self.down_s = server, how, down_s
        self.reached, self.down = threading.Event(), threading.Event()
        self.down_at = self.up_at = 0.0

    def before_write(self) -> None:  # in the writer thread
        self.reached.set()
        assert self.down.wait(30), "the outage never began"

    def run(self, writer: threading.Thread, timeout_s: float = 60) -> None:  # in the main thread
        writer.start()
        assert self.reached.wait(timeout_s), "the writer never reached the write"
        getattr(self.server, self.how)()  # stop: SIGTERM, kill: SIGKILL
        self.down_at = time.monotonic()
        self.down.set()
        time.sleep(self.down_s)
        self.server.start()
        self.up_at = time.monotonic()
        writer.join(timeout_s)
        assert not writer.is_alive(), "the writer did not finish"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_enrollments_complete_across_a_restart(
    redis_server: Server, how: str, record_property: Callable[[str, object], None]
) -> None:
    retries: list[str] = []
    policy = Retry(
        ExponentialBackoff(base=0.05, cap=0.5),
        attempts=40,  # up to ~20 s
        on_retry=lambda n, exc, wait: retries.append(type(exc).__name__),
    )
    store = RedisGalleryStore(connect(redis_server.url), prefix=f"rel-{uuid.uuid4().hex[:8]}", retry=policy)
    sent = {f"P{i}": rows(3, seed=i) for i in range(8)}
    acknowledged: list[tuple[str, float]] = []
    failed: list[BaseException] = []
    outage = Outage(redis_server, how, OUTAGE_S)

    def enroll_all() -> None:
        try:
            for i, (name, emb) in enumerate(sent.items()):
                if i == 3:  # three acknowledged; the fourth write meets the outage
                    outage.before_write()
                store.enroll(name, emb, MV)
                acknowledged.append((name, time.monotonic()))
        except BaseException as exc:
            failed.append(exc)

    outage.run(threading.Thread(target=enroll_all))
    through_s = acknowledged[3][1] - outage.down_at if len(acknowledged) > 3 else float("nan")
    print(
        f"\nredis {how} for {outage.up_at - outage.down_at:.2f}s during enrollment: the write that met "
        f"it was acknowledged {through_s:.2f}s after the outage began, "
        f"{through_s - (outage.up_at - outage.down_at):.2f}s after the server was back, after "
        f"{len(retries)} retries ({', '.join(sorted(set(retries)))})"
    )
    record_property(f"enroll_through_after_{how}_s", round(through_s, 3))

    assert not failed, failed
    assert retries, "no enrollment met the outage"
    assert [name for name, _ in acknowledged] == list(sent)
    assert [i.name for i in store.list_identities()] == sorted(sent)
    for name, emb in sent.items():  # every row once: no enrollment applied twice
        assert store.get(name).embeddings == {MV: len(emb)}
        np.testing.assert_allclose(store.embeddings(name, MV), emb, atol=1e-6)
    assert [e.op for e in store.changes_since("0-0").events] == ["enroll"] * len(sent)
    assert store.verify() == []
    store.close()


@pytest.fixture
def photo_folder(celebrity_dir: Path, tmp_path: Path) -> Path:
    """``PEOPLE`` with their first two training photos each (one face in every photo)."""
    root = tmp_path / "people"
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for photo in sorted((celebrity_dir / "train" / person).iterdir())[:2]:
            (root / person / photo.name).symlink_to(photo)
    return root


def enroll_argv(folder: Path, server: Server, prefix: str) -> list[str]:
    argv = ["enroll", "--folder", str(folder)]
    for item in (f"gallery.url={server.url}", f"gallery.prefix={prefix}", "embedder.threads=1"):
        argv += ["--set", item]
    return argv


def test_cli_enroll_survives_a_redis_crash_and_restart(
    redis_server: Server,
    photo_folder: Path,
    mtcnn_weights_dir: Path,
    facenet_keras_h5: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"rel-{uuid.uuid4().hex[:8]}"
    original = RedisGalleryStore.enroll
    calls: list[str] = []
    outage = Outage(redis_server, "kill", OUTAGE_S)

    def enroll(self: RedisGalleryStore, name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        if len(calls) == 2:  # the first person is in; the second's write meets the crash
            outage.before_write()
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(RedisGalleryStore, "enroll", enroll)
    caplog.set_level(logging.INFO, logger="streamproc.retry")
    codes: list[int] = []
    outage.run(
        threading.Thread(target=lambda: codes.append(main(enroll_argv(photo_folder, redis_server, prefix))))
    )
    out, err = capsys.readouterr()
    retried = [r.getMessage() for r in caplog.records if r.name == "streamproc.retry"]
    print(f"\nenroll exit {codes}; redis down {outage.up_at - outage.down_at:.2f}s; retries: {retried}")

    assert codes == [0], err
    assert "enrolled 8 of 8 images" in out
    assert calls == list(PEOPLE)
    assert retried, "the second person's write never met the crash"
    store = RedisGalleryStore(connect(redis_server.url), prefix=prefix)
    stored = {i.name: sum(i.embeddings.values()) for i in store.list_identities()}
    assert stored == dict.fromkeys(PEOPLE, 2)  # every photo once
    assert len(store.changes_since("0-0").events) == len(PEOPLE)
    assert store.verify() == []
    store.close()


def test_cli_enroll_rerun_after_a_failure_adds_nothing_twice(
    redis_server: Server,
    photo_folder: Path,
    mtcnn_weights_dir: Path,
    facenet_keras_h5: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"rel-{uuid.uuid4().hex[:8]}"
    argv = enroll_argv(photo_folder, redis_server, prefix)
    assert main(argv) == 0
    assert main(argv) == 0  # the operator's retry of the whole command
    capsys.readouterr()
    store = RedisGalleryStore(connect(redis_server.url), prefix=prefix)
    counts = {i.name: sum(i.embeddings.values()) for i in store.list_identities()}
    store.close()
    assert counts == dict.fromkeys(PEOPLE, 2)
