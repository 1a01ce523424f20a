"""The Ray driver loop without a cluster: in-process fake actors behind ``Calls``.

The fakes keep Ray's contract: a stream actor runs its calls in submission order and checks that
``track`` and ``back`` come in batch order; the model pools answer after seeded random delays, so
results come back out of order; a dead actor fails the call that found it dead and every call made
while it restarts, and a restarted one starts its file over (the same event ids again). A scripted
controller promotes a second model half-way through.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from ray.exceptions import RayActorError, RayTaskError

from streamproc.config import load_config
from streamproc.errors import DecodeError
from streamproc.gallery.index import GalleryIndex
from streamproc.metrics import NullRecorder
from streamproc.models import registry
from streamproc.runtime.chain import Back, Front, Read
from streamproc.runtime.config import RuntimeConfig
from streamproc.runtime.control import Controller, Serving
from streamproc.runtime.driver import Calls, Loop, Pools, StreamBook
from streamproc.runtime.outlet import Outlet
from streamproc.stages.emit import MemorySink
from streamproc.types import Decision, Faces

BATCHES = 12
DIM = 4


@dataclass(eq=False)
class Ref:
    """A call's result (or error), done at tick ``due``."""

    value: Any = None
    error: BaseException | None = None
    due: int = 0


class Method:
    def __init__(self, world: World, fn: Any, returns: int = 1, delayed: bool = False):
        self.world, self.fn, self.returns, self.delayed = world, fn, returns, delayed

    def remote(self, *args: Any) -> Any:
        due = self.world.tick + (self.world.rng.randint(0, 4) if self.delayed else 0)
        args = tuple(a.value if isinstance(a, Ref) else a for a in args)  # Ray resolves ref arguments
        try:
            out = self.fn(*args)
        except (RayActorError, RayTaskError) as exc:
            refs = [Ref(error=exc, due=due) for _ in range(self.returns)]
        else:
            refs = [Ref(v, due=due) for v in (out if self.returns > 1 else (out,))]
        if self.delayed:
            self.world.submitted.append(refs[0])
        return tuple(refs) if self.returns > 1 else refs[0]


@dataclass
class World:
    """The fake cluster: a tick per ``ready`` call, and what was killed."""

    rng: random.Random = field(default_factory=lambda: random.Random(7))
    tick: int = 0
    killed: list[Any] = field(default_factory=list)
    submitted: list[Ref] = field(default_factory=list)  # pool calls, in submission order
    answered: list[Ref] = field(default_factory=list)  # pool calls, in the order they came back

    def ready(self, refs: list[Any], timeout: float) -> list[Any]:
        self.tick += 1
        done = [r for r in refs if r.due <= self.tick]
        self.answered += [r for r in done if r in self.submitted]
        return done

    def get(self, ref: Ref) -> Any:
        if ref.error is not None:
            raise ref.error
        return ref.value

    def calls(self) -> Calls:
        return Calls(self.ready, self.get, self.killed.append)


class FakeStream:
    """A file of ``BATCHES`` batches, one face each; dies once in ``back(die_at)`` when asked."""

    def __init__(self, world: World, sid: str, die_at: int | None = None, fail: Exception | None = None):
        self.sid, self.die_at, self.fail = sid, die_at, fail  # fail: raised in back(die_at) instead
        self.next_read = self.next_track = self.next_back = 0
        self.state = "up"  # up | dead (calls fail) | restarting (the first probe fails)
        self.backs: list[tuple[int, str]] = []  # (seq, model version) of every back, replays included
        self.ready = Method(world, self._ready)
        self.front = Method(world, self._front, returns=2)
        self.read = Method(world, self._read, returns=2)
        self.track = Method(world, self._track, returns=2)
        self.back = Method(world, self._back)

    def _alive(self) -> None:
        if self.state != "up":
            raise RayActorError()

    def _ready(self, first_track_id: int = 0) -> str:
        if self.state == "dead":
            self.state = "restarting"
        elif self.state == "restarting":  # a new process: the file starts over
            self.state, self.next_read, self.next_track, self.next_back = "up", 0, 0, 0
        self._alive()
        return self.sid

    def _read(self, stop: bool = False) -> tuple[Read, np.ndarray]:
        self._alive()
        if self.next_read >= BATCHES:
            return Read(self.sid, -1, 0, last=True), np.zeros((0, 2, 2, 3), np.uint8)
        seq, self.next_read = self.next_read, self.next_read + 1
        return Read(self.sid, seq, 1, last=seq == BATCHES - 1), np.full((1, 2, 2, 3), seq, np.uint8)

    def _track(self, seq: int, found: list[Faces]) -> tuple[Front, np.ndarray]:
        self._alive()
        assert seq == self.next_track, f"{self.sid}: track({seq}) out of order"
        assert len(found) == 1, "the detector's faces did not come with the batch"
        self.next_track += 1
        last = seq == BATCHES - 1
        return Front(self.sid, seq, 1, 1, 1, last, next_track_id=seq + 1), np.full((1, DIM), seq, np.float32)

    def _front(self, stop: bool = False) -> tuple[Front, np.ndarray]:
        read, _ = self._read(stop)
        if read.seq < 0:
            return Front(self.sid, -1, 0, 0, 0, last=True), np.zeros((0, DIM), np.float32)
        return self._track(read.seq, [Faces.empty()])

    def _back(self, seq: int, embeddings: np.ndarray, version: str | None = None) -> Back:
        self._alive()
        if self.fail is not None and seq >= (self.die_at or 0):  # what Ray hands the caller of a raising
            raise RayTaskError("back", f"Traceback ...\n{self.fail!r}", self.fail)  # method, then and after
        assert seq == self.next_back, f"{self.sid}: back({seq}) out of order"
        assert embeddings[0, 0] == seq, "another batch's embeddings"
        if seq == self.die_at:
            self.die_at, self.state = None, "dead"
            raise RayActorError()
        self.next_back += 1
        self.backs.append((seq, version or ""))
        decision = Decision(self.sid, seq, seq, seq, "ada", 0.1, 1, version or "", "v1")
        return Back(self.sid, seq, [decision], [seq], seq == BATCHES - 1, 1, model_version=version or "")


class FakeModel:
    """An embedder (rows = the crops, so each batch's rows say which batch they are) or a detector."""

    def __init__(self, world: World, version: str = "v1"):
        self.version = version
        self.info = Method(world, lambda: (version, DIM))
        self.embed = Method(world, lambda crops: np.asarray(crops, np.float32), delayed=True)
        self.detect = Method(world, lambda images: [Faces.empty() for _ in images], delayed=True)


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


def outlet_for_a_and_b() -> tuple[Outlet, MemorySink]:
    """The outlet of a run of streams a and b, matching against one enrolled person (ada)."""
    config = load_config(None, ["sources=[{uri: a.mp4}, {uri: b.mp4}]"])
    card = registry.peek_card(registry.DEFAULT_MODEL)
    index = GalleryIndex.from_arrays(
        ["id-ada"], ["ada"], np.eye(1, DIM, dtype=np.float32), model_version="v1"
    )
    sink = MemorySink()
    return Outlet(config, card, sources=config.sources, index=index, sinks=[sink]), sink


@pytest.mark.parametrize("detectors", [0, 1])
def test_reordered_results_an_actor_death_and_a_model_switch(detectors: int) -> None:
    world = World()
    outlet, sink = outlet_for_a_and_b()
    streams = {"a": FakeStream(world, "a"), "b": FakeStream(world, "b", die_at=5)}
    new_models: list[FakeModel] = []

    def start_embedders(model: str) -> list[Any]:
        new_models.append(FakeModel(world, "v2"))
        return new_models[-1:]

    old = [FakeModel(world), FakeModel(world)]
    pools = Pools(old, [FakeModel(world)] * detectors, "v1", start_embedders)
    books = {sid: StreamBook(sid, actor) for sid, actor in streams.items()}
    # after b's replay (a replay under v2 would be new events: their ids name the model version)
    control = ScriptedControl(outlet, lambda: len(streams["b"].backs) >= 5 + 6)
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
    assert control.in_service == ["v2"] and pools.versions == ["v1", "v1", "v2"]
    assert pools.draining | pools.retired == {0, 1}, "the old embedders got no new work"
    assert world.killed and all(any(k is m for m in old) for k in world.killed), "drained ones stop"
    versions = [d.model_version for _, d in sink.seen if d.stream_id == "b"]
    assert versions[:6] == ["v1"] * 6 and versions[-1] == "v2", "b's last batches were embedded by v2"
    outlet.close()


def loop_for(
    world: World, streams: dict[str, FakeStream], detectors: list[FakeModel]
) -> tuple[Loop, Outlet, MemorySink]:
    """The driver loop over ``streams`` with one embedder and ``detectors``, no model switch."""
    outlet, sink = outlet_for_a_and_b()
    books = {sid: StreamBook(sid, actor) for sid, actor in streams.items()}
    pools = Pools([FakeModel(world)], detectors, "v1", None)
    control = Controller(outlet.config, outlet)
    rt = RuntimeConfig(max_in_flight=3, max_restarts=1)
    loop = Loop(rt, NullRecorder(), threading.Event(), outlet, pools, books, None, control, world.calls())
    return loop, outlet, sink


def run_with_failing_stream(fail: Exception) -> tuple[Loop, Outlet, MemorySink]:
    """Streams a and b through the loop; b's actor raises ``fail`` in ``back(5)``."""
    world = World()
    return loop_for(
        world, {"a": FakeStream(world, "a"), "b": FakeStream(world, "b", die_at=5, fail=fail)}, []
    )


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


def test_a_failing_detector_call_closes_only_the_stream_it_was_for() -> None:
    """A model failure in the shared detector pool (e.g. out of GPU memory) is not a bug in a stream."""
    world = World()
    calls = iter(range(1000))

    def detect(images: list[np.ndarray]) -> list[Faces]:
        if next(calls) == 3:
            raise RayTaskError("detect", "Traceback ...", RuntimeError("CUDA out of memory"))
        return [Faces.empty() for _ in images]

    detector = FakeModel(world)
    detector.detect = Method(world, detect, delayed=True)
    loop, outlet, sink = loop_for(
        world, {"a": FakeStream(world, "a"), "b": FakeStream(world, "b")}, [detector]
    )
    loop.run()
    summary = outlet.summary("fake", 1.0)
    failed = [sid for sid, s in summary.streams.items() if "RuntimeError: CUDA out of memory" in str(s)]
    assert len(failed) == 1, summary.streams
    (other,) = {"a", "b"} - set(failed)
    assert sorted(d.track_id for _, d in sink.seen if d.stream_id == other) == list(range(BATCHES))
    outlet.close()
