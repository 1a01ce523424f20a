"""Faults injected into a real run: an embedding actor killed, the event Redis restarted.

Both runs process ``demo_video`` end to end and must still name every person shown and write each
decision exactly once. The observed recovery times are printed (``pytest -s``) and attached to the
test report as properties.

* An **embedding actor** (the run's only one) is killed with ``ray.kill(no_restart=False)`` when
  its first result reaches the driver; ``runtime.max_restarts=1`` lets Ray restart it and retry the
  calls that were in flight.
* The **event Redis** (a real ``redis-server`` on a free loopback port, AOF in ``tmp_path``) gets
  SIGTERM just before the sink's second write and is started again on the same port and folder
  ``OUTAGE_S`` later; the sink's injected ``Retry`` policy carries that write through (the client
  has redis-py's own retries off, as every client of the product does).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
from ray.exceptions import GetTimeoutError, RayActorError

from streamproc.gallery.embedded import client_kwargs
from streamproc.metrics import Metric, Recorder
from streamproc.retry import ExponentialBackoff, Retry
from streamproc.runtime import pipeline
from streamproc.runtime.driver import Loop
from streamproc.runtime.local import LocalRunner
from streamproc.runtime.pipeline import RayRunner
from streamproc.stages.emit import MemorySink, RedisStreamSink
from streamproc.types import Decision

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
OUTAGE_S = 1.0  # how long the event Redis stays down
RECOVERY_LIMIT_S = 60.0
MakeConfig = Callable[..., Any]


def known(decisions: list[Decision]) -> set[str]:
    return {d.identity for d in decisions if d.identity is not None}


# --- (a) an embedding actor killed --------------------------------------------------------------------
class EmbedKiller(Recorder):
    """Kills the run's first embedding actor when its first result is recorded, then times its return.

    ``killed_at``: when ``ray.kill`` was sent; ``back_at``: when a new actor process (another pid)
    first answered; ``embeds``: when each embedding result reached the driver.
    """

    def __init__(self, loops: list[Loop]) -> None:
        self.loops = loops
        self.embeds: list[float] = []
        self.killed_at: float | None = None
        self.back_at: float | None = None
        self.old_pid: int | None = None
        self.watcher: threading.Thread | None = None

    def _observe(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        if name != "stage_seconds" or labels["stage"] != "embed":
            return
        self.embeds.append(time.monotonic())
        if self.killed_at is None:
            actor = self.loops[0].pools.embedders[0]
            self.old_pid = ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=30)
            ray.kill(actor, no_restart=False)
            self.killed_at = time.monotonic()
            self.watcher = threading.Thread(target=self._wait_back, args=(actor,), daemon=True)
            self.watcher.start()

    def _wait_back(self, actor: Any) -> None:
        assert self.killed_at is not None
        while time.monotonic() < self.killed_at + RECOVERY_LIMIT_S:
            try:
                pid = ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=10)
            except (RayActorError, GetTimeoutError):
                time.sleep(0.05)
                continue
            if pid != self.old_pid:
                self.back_at = time.monotonic()
                return
            time.sleep(0.05)

    def longest_gap_after_kill(self) -> float:
        assert self.killed_at is not None
        times = [self.killed_at] + [t for t in self.embeds if t > self.killed_at]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def test_embedding_actor_killed_mid_run(
    ray_cluster: None,
    make_config: MakeConfig,
    demo_video: Path,
    demo_people: set[str],
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    loops: list[Loop] = []

    class Spy(Loop):  # the run's driver loop, to reach its embedding actors
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            loops.append(self)

    monkeypatch.setattr(pipeline, "Loop", Spy)
    killer, sink = EmbedKiller(loops), MemorySink()
    config = make_config([{"uri": str(demo_video)}], "runtime.max_restarts=1")

    started = time.monotonic()
    summary = RayRunner(config, recorder=killer, sinks=[sink]).run()
    wall = time.monotonic() - started
    if killer.watcher is not None:
        killer.watcher.join(RECOVERY_LIMIT_S)

    assert killer.killed_at is not None, "the run embedded nothing: no actor was killed"
    embeds_after = sum(1 for t in killer.embeds if t > killer.killed_at)
    restart_s = None if killer.back_at is None else round(killer.back_at - killer.killed_at, 3)
    gap_s = killer.longest_gap_after_kill()
    print(
        f"\nembed actor killed: new actor answered after {restart_s}s; longest wait for an embedding "
        f"after the kill {gap_s:.2f}s; {embeds_after} embedding results after it; run {wall:.1f}s"
    )
    record_property("embed_actor_restart_s", restart_s)
    record_property("embed_longest_gap_after_kill_s", round(gap_s, 3))

    assert summary.ok, summary.streams
    assert restart_s is not None, f"no new embedding actor answered within {RECOVERY_LIMIT_S:g}s"
    assert embeds_after > 0, "nothing was embedded after the kill: the fault hit no in-flight work"
    assert known(summary.decisions) == demo_people
    ids = [d.event_id for _, d in sink.seen]
    assert len(ids) == len(set(ids)), "an event id was emitted twice"
    assert set(ids) == {d.event_id for d in summary.decisions}


# --- (b) the event Redis restarted ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on one loopback port with its AOF in ``folder``; stop and start at will."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder)]
        args += ["--appendonly", "yes", "--save", "", "--protected-mode", "yes"]
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server did not start: see {self.folder / 'redis.log'}"
                    ) from exc
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def event_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


class OutageSink(RedisStreamSink):
    """Stops the server just before its second write (the first events are in) and starts it again
    ``OUTAGE_S`` later; ``stopped_at`` / ``restarted_at`` / ``through_at`` time the outage."""

    def __init__(self, server: RedisServer, client: redis.Redis, stream_key: str, retry: Retry) -> None:
        super().__init__(client, stream_key, retry=retry)
        self.server = server
        self.writes = 0
        self.stopped_at: float | None = None
        self.restarted_at: float | None = None
        self.through_at: float | None = None
        self.timer: threading.Timer | None = None

    def _restart(self) -> None:
        self.server.start()
        self.restarted_at = time.monotonic()

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        self.writes += 1
        if self.writes == 2:
            self.server.stop()
            self.stopped_at = time.monotonic()
            self.timer = threading.Timer(OUTAGE_S, self._restart)
            self.timer.start()
        written = super()._write(decisions)
        if self.writes == 2:
            self.through_at = time.monotonic()
        return written


def test_event_redis_restarted_mid_run(
    event_redis: RedisServer,
    make_config: MakeConfig,
    demo_video: Path,
    demo_people: set[str],
    record_property: Callable[[str, object], None],
) -> None:
    retries: list[tuple[float, int, str]] = []
    retry = Retry(
        ExponentialBackoff(base=0.1, cap=0.5),
        attempts=40,  # at most ~20 s of waiting
        on_retry=lambda n, exc, wait: retries.append((time.monotonic(), n, type(exc).__name__)),
    )
    # the product's client options: redis-py's own retries off, so only the sink's policy retries
    # (with redis-py's default Retry the client itself would ride through the outage)
    client = redis.Redis(host="127.0.0.1", port=event_redis.port, **client_kwargs())
    sink = OutageSink(event_redis, client, "faults:events", retry)

    started = time.monotonic()
    summary = LocalRunner(make_config([{"uri": str(demo_video)}]), sinks=[sink]).run()
    wall = time.monotonic() - started
    if sink.timer is not None:
        sink.timer.join()

    assert sink.stopped_at is not None, f"the sink wrote {sink.writes} time(s): no outage was injected"
    assert sink.restarted_at is not None and sink.through_at is not None
    down_s = sink.restarted_at - sink.stopped_at
    through_s = sink.through_at - sink.stopped_at
    print(
        f"\nevent redis down {down_s:.2f}s (SIGTERM to accepting again); the write that met the outage "
        f"went through {through_s:.2f}s after the stop, {through_s - down_s:.2f}s after the restart, "
        f"after {len(retries)} retries; run {wall:.1f}s"
    )
    record_property("redis_down_s", round(down_s, 3))
    record_property("redis_write_through_after_stop_s", round(through_s, 3))
    record_property("redis_retries", len(retries))

    assert retries, "no write met the outage: the test exercised nothing"
    assert summary.ok, summary.streams
    assert known(summary.decisions) == demo_people
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange("faults:events")  # type: ignore[assignment]
    ids = [fields[b"event_id"].decode() for _, fields in entries]
    assert len(ids) == len(set(ids)), "an event is in the stream twice"
    assert set(ids) == {d.event_id for d in summary.decisions}, "the stream lost events"
    client.close()
