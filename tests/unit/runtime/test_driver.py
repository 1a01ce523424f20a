"""The Ray scheduler without a cluster: the driver loop and the real stream-actor body
(``StreamWorker``: its pump thread, outbox and ``take``) over in-process fakes.

The fakes keep Ray's contract: an actor runs its calls in submission order; the model pools answer
from worker threads after seeded random delays, so results come back out of order; a dead actor
fails every call until Ray has restarted it, and a restarted one is a new process whose file starts
over (the same event ids again). A fake chain checks that the pump tracks and aggregates in batch
order and gets each batch's own embeddings. A scripted controller promotes a second model half-way.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ray.exceptions import ActorUnavailableError, RayTaskError

from streamproc.config import load_config
from streamproc.errors import DecodeError
from streamproc.gallery.index import GalleryIndex
from streamproc.metrics import NullRecorder
from streamproc.models import registry
from streamproc.runtime.chain import Back, Front
from streamproc.runtime.config import RuntimeConfig
from streamproc.runtime.control import Controller, Serving
from streamproc.runtime.driver import Calls, Loop, Pools, StreamBook
from streamproc.runtime.outlet import Outlet
from streamproc.runtime.pump import LocalPool, Pump
from streamproc.runtime.ray_actors import StreamWorker
from streamproc.stages.emit import MemorySink
from streamproc.types import Decision, Faces

BATCHES = 12
DIM = 4


@dataclass(eq=False)
class Ref:
    """A call's result: a value, an error, or a future of a pool's worker thread."""

    value: Any = None
    error: BaseException | None = None
    future: Future[Any] | None = None

    def done(self) -> bool:
        return self.future is None or self.future.done()

    def get(self) -> Any:
        if self.future is not None:
            return self.future.result()
        if self.error is not None:
            raise self.error
        return self.value


def call(fn: Callable[..., Any], *args: Any) -> Ref:
    try:
        return Ref(fn(*args))
    except Exception as exc:
        return Ref(error=exc if isinstance(exc, RayTaskError | ActorUnavailableError) else _task_error(exc))


def _task_error(exc: Exception) -> RayTaskError:
    """What Ray hands the caller of a method that raised."""
    return RayTaskError("method", f"Traceback ...\n{exc!r}", exc)


@dataclass
class World:
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    threads: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4))
    killed: list[Any] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)  # pool calls' tags, in submission order
    answered: list[int] = field(default_factory=list)  # in the order they finished
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ready(self, refs: list[Any], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not (done := [r for r in refs if r.done()]) and time.monotonic() < deadline:
            time.sleep(0.002)
        return done

    def calls(self) -> Calls:
        return Calls(self.ready, lambda ref: ref.get(), self.killed.append)


class FakePool:
    """A model pool answering from worker threads after a random delay of 0-4 ms."""

    def __init__(self, world: World, fn: Callable[[Any], Any], version: str = "v1"):
        self.world, self.fn, self.version = world, fn, version
        self.calls = 0

    def submit(self, data: Any) -> Ref:
        world, delay = self.world, self.world.rng.uniform(0, 0.004)
        with world.lock:
            tag = len(world.submitted)
            world.submitted.append(tag)
        self.calls += 1

        def run() -> Any:
            time.sleep(delay)
            with world.lock:
                world.answered.append(tag)
            return self.fn(data)

        return Ref(future=world.threads.submit(run))

    def ready(self, ref: Ref) -> bool:
        return ref.done()

    def result(self, ref: Ref) -> Any:
        return ref.get()


class FakeModel:
    """A model actor for the driver: ``info`` answers; the pump reaches it through ``FakePool``."""

    def __init__(self, world: World, version: str = "v1"):
        self.version = version
        self.info = SimpleNamespace(remote=lambda: call(lambda: (version, DIM)))
        self.pool = FakePool(world, lambda crops: np.asarray(crops, np.float32), version)


class FakeChain:
    """A file of ``BATCHES`` batches, one face each; ``fail`` is raised in ``back(fail_at)``."""

    embedding_dim = DIM

    def __init__(
        self, sid: str, backs: list[tuple[int, str]], fail_at: int = -1, fail: Exception | None = None
    ):
        self.stream_id, self.backs, self.fail_at, self.fail = sid, backs, fail_at, fail
        self.next_read = self.next_track = self.next_back = 0
        self.reading_done = False
        self.dead = False  # its process is gone: the pump thread must not go on
        self.source = SimpleNamespace(close=lambda: None)

    def resume(self, first_track_id: int) -> None:
        pass

    def read(self, stop: bool = False) -> tuple[int, np.ndarray]:
        self._alive()
        seq, self.next_read = self.next_read, self.next_read + 1
        self.reading_done = stop or seq == BATCHES - 1
        return seq, np.full((1, 2, 2, 3), seq, np.uint8)

    def _alive(self) -> None:
        if self.dead:
            raise SystemExit("the process is gone")

    def track(self, seq: int, found: list[Faces]) -> tuple[Front, np.ndarray]:
        self._alive()
        assert seq == self.next_track, f"{self.stream_id}: track({seq}) out of order"
        assert len(found) == 1, "the detector's faces did not come with the batch"
        self.next_track += 1
        return Front(self.stream_id, seq, 1, 1, 1, next_track_id=seq + 1), np.full((1, DIM), seq, np.float32)

    def detector_failed(self, seq: int, exc: Exception) -> None:
        raise AssertionError(f"detector failed: {exc}")

    def back(self, seq: int, embeddings: np.ndarray, version: str | None = None) -> Back:
        self._alive()
        assert seq == self.next_back, f"{self.stream_id}: back({seq}) out of order"
        assert embeddings[0, 0] == seq, "another batch's embeddings"
        if seq == self.fail_at and self.fail is not None:
            raise self.fail
        self.next_back += 1
        self.backs.append((seq, version or ""))
        last = self.reading_done and seq == self.next_read - 1
        decision = Decision(self.stream_id, seq, seq, seq, "ada", 0.1, 1, version or "", "v1")
        return Back(self.stream_id, seq, [decision], [seq], last, 1, model_version=version or "")


class Method:
    def __init__(self, actor: FakeStreamActor, name: str):
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> Ref:
        return self.actor.call(self.name, *args)


class FakeStreamActor:
    """A stream actor: the real ``StreamWorker`` in a fake process. ``die_after`` records taken, the
    process dies (every call fails) and, after one refused ``start``, Ray has a new one: a new chain
    from the file's start. Model handles (``FakeModel``) stand for the actor handles Ray passes."""

    def __init__(self, world: World, sid: str, die_after: int = -1, fail: Exception | None = None):
        self.world, self.sid, self.die_after, self.fail = world, sid, die_after, fail
        self.backs: list[tuple[int, str]] = []  # (seq, model version) of every back, replays included
        self.taken = 0
        self.state = "up"  # up | dead | restarting
        self.worker = self._new_worker()
        for name in ("start", "take", "stop", "use_embedders"):
            setattr(self, name, Method(self, name))

    def _new_worker(self) -> StreamWorker:
        chain = FakeChain(self.sid, self.backs, fail_at=5, fail=self.fail)
        return PoolWorker(chain, depth=3)  # type: ignore[arg-type]

    def call(self, name: str, *args: Any) -> Ref:
        if self.state == "dead":
            self.state = "restarting"
        elif self.state == "restarting" and name == "start":
            self.state, self.worker = "up", self._new_worker()  # the new process
        if self.state != "up":
            return Ref(error=ActorUnavailableError("restarting", None))
        ref = call(getattr(self.worker, name), *args)
        if name == "take" and ref.error is None:
            self.taken += len(ref.value.records)
            if 0 <= self.die_after <= self.taken:
                self.die_after, self.state = -1, "dead"
                self.worker.chain.dead = True
                return Ref(error=ActorUnavailableError("died", None))
        return ref


class PoolWorker(StreamWorker):
    """``StreamWorker`` with its pools made of the fake models' ``FakePool`` s."""

    def start(self, first_track_id: int, embedders: list[Any], version: str, detectors: list[Any]) -> str:
        if self.pump is None:
            own = LocalPool(lambda images: [Faces.empty() for _ in images], merge=np.concatenate)
            self.pump = Pump(
                self.chain, embedders[0].pool, detectors[0].pool if detectors else own, self.depth
            )
            threading.Thread(target=self._run, daemon=True).start()
        return self.chain.stream_id

    def use_embedders(self, embedders: list[Any], version: str) -> None:
        assert self.pump is not None
        self.pump.embed = embedders[0].pool


class ScriptedControl(Controller):
    """Promotes model ``m2`` (version v2) once ``when()`` says so."""

    def __init__(self, outlet: Outlet, when: Callable[[], bool]):
        super().__init__(outlet.config, outlet)
        self.when = when
        self.in_service: list[str] = []

    def apply(self) -> None:
        if self.on_model is not None and self.when():
            self.on_model(Serving("m2", "v2", "v1"))
            self.on_model = None

    def model_in_service(self, version: str) -> None:
        self.in_service.append(version)


def outlet_for_a_and_b(sink: MemorySink | None = None) -> tuple[Outlet, MemorySink]:
    """The outlet of a run of streams a and b, matching against one enrolled person (ada)."""
    config = load_config(None, ["sources=[{uri: a.mp4}, {uri: b.mp4}]"])
    card = registry.peek_card(registry.DEFAULT_MODEL)
    index = GalleryIndex.from_arrays(
        ["id-ada"], ["ada"], np.eye(1, DIM, dtype=np.float32), model_version="v1"
    )
    sink = sink or MemorySink()
    return Outlet(config, card, sources=config.sources, index=index, sinks=[sink]), sink


def detector(world: World) -> FakeModel:
    model = FakeModel(world)
    model.pool = FakePool(world, lambda images: [Faces.empty() for _ in images])
    return model


@pytest.mark.parametrize("detectors", [0, 1])
def test_reordered_results_an_actor_death_and_a_model_switch(detectors: int) -> None:
    world = World()
    outlet, sink = outlet_for_a_and_b()
    streams = {"a": FakeStreamActor(world, "a"), "b": FakeStreamActor(world, "b", die_after=8)}
    new_models: list[FakeModel] = []

    def start_embedders(model: str) -> list[Any]:  # two, as with runtime.embedders=2: each answers alone
        new_models.extend([FakeModel(world, "v2"), FakeModel(world, "v2")])
        return new_models[-2:]

    old = [FakeModel(world)]
    pools = Pools(list(old), [detector(world) for _ in range(detectors)], "v1", start_embedders)
    books = {sid: StreamBook(sid, actor) for sid, actor in streams.items()}
    # after b's replay has begun (a replay under v2 would be new events: their ids name the model version)
    control = ScriptedControl(outlet, lambda: books["b"].restarts == 1 and len(streams["b"].backs) >= 8)
    rt = RuntimeConfig(max_in_flight=3, max_restarts=1)
    loop = Loop(rt, NullRecorder(), threading.Event(), outlet, pools, books, None, control, world.calls())
    control.on_model = loop.start_upgrade
    loop.run()
    summary = outlet.summary("fake", 1.0)

    assert summary.ok, summary.streams
    assert world.answered != world.submitted, "the pools answered in order: nothing was reordered"
    for sid in streams:
        ids = [d.track_id for _, d in sink.seen if d.stream_id == sid]
        assert sorted(ids) == list(range(BATCHES)), f"{sid}: every batch's event once at the sink"
        assert summary.streams[sid].decisions == BATCHES
    assert books["b"].restarts == 1 and len(streams["b"].backs) > BATCHES, "b replayed after its death"
    assert control.in_service == ["v2"] and pools.version == "v2" and pools.embedders == new_models
    assert [*world.killed, *pools.draining] == old, "the old embedder drained (killed once both moved)"
    versions = [d.model_version for _, d in sink.seen if d.stream_id == "b"]
    assert versions[0] == "v1" and versions[-1] == "v2", "b's last batches were embedded by v2"
    assert new_models[0].pool.calls > 0
    outlet.close()


class StopOnFirstEvent(MemorySink):
    """Asks the run to stop when the first event is written."""

    def __init__(self) -> None:
        super().__init__()
        self.stop = threading.Event()

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        self.stop.set()
        return super()._write(decisions)


def loop_for(
    world: World, streams: dict[str, FakeStreamActor], sink: MemorySink | None = None
) -> tuple[Loop, Outlet, MemorySink]:
    """The driver loop over ``streams`` with one embedder, no model switch."""
    outlet, sink = outlet_for_a_and_b(sink)
    books = {sid: StreamBook(sid, actor) for sid, actor in streams.items()}
    control = Controller(outlet.config, outlet)
    rt = RuntimeConfig(max_in_flight=3, max_restarts=1)
    stop = sink.stop if isinstance(sink, StopOnFirstEvent) else threading.Event()
    pools = Pools([FakeModel(world)], [], "v1")
    loop = Loop(rt, NullRecorder(), stop, outlet, pools, books, None, control, world.calls())
    return loop, outlet, sink


def run_with_failing_stream(fail: Exception) -> tuple[Loop, Outlet, MemorySink]:
    """Streams a and b through the loop; b's chain raises ``fail`` in ``back(5)``."""
    world = World()
    return loop_for(world, {"a": FakeStreamActor(world, "a"), "b": FakeStreamActor(world, "b", fail=fail)})


def test_a_bug_in_a_stream_actor_ends_the_run_with_its_traceback() -> None:
    """As with the local runner: a programming error is not a stream closed with a one-line warning."""
    loop, outlet, _ = run_with_failing_stream(ZeroDivisionError("division by zero"))
    with pytest.raises(RayTaskError) as info:
        loop.run()
    assert isinstance(info.value.cause, ZeroDivisionError)
    assert "ZeroDivisionError" in str(info.value)  # the actor's traceback reaches the CLI's log
    outlet.close()


def test_a_user_facing_error_in_a_stream_actor_closes_that_stream_only() -> None:
    loop, outlet, sink = run_with_failing_stream(DecodeError("b.mp4: corrupt packet"))
    loop.run()
    summary = outlet.summary("fake", 1.0)
    assert "DecodeError: b.mp4: corrupt packet" in str(summary.streams["b"])
    assert sorted(d.track_id for _, d in sink.seen if d.stream_id == "a") == list(range(BATCHES))
    outlet.close()


def test_stop_decides_every_open_stream_before_the_run_ends() -> None:
    world = World()
    streams = {"a": FakeStreamActor(world, "a"), "b": FakeStreamActor(world, "b")}
    loop, outlet, _ = loop_for(world, streams, StopOnFirstEvent())
    loop.run()
    summary = outlet.summary("fake", 1.0)
    assert summary.ok, summary.streams
    for sid in ("a", "b"):
        seqs = [seq for seq, _ in streams[sid].backs]
        assert seqs == list(range(len(seqs))) and len(seqs) < BATCHES, (sid, seqs)
        assert summary.streams[sid].decisions == len(seqs), "every batch aggregated was decided"
    outlet.close()
