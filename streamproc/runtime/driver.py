"""The driver loop of ``RayRunner``: it only receives records and keeps the stream actors going.

Each stream actor schedules its own batches (``Pump``, as in the local runner) and calls the model
pools itself. The driver starts it with the pools' handles, keeps one ``take`` call out per stream
and hands the records to the ``Outlet`` (match, emit, metrics). It restarts streams whose actor
died, stops every stream at ``stop()`` or the deadline (killing those still going ``stop_grace_s``
later), and runs rolling upgrades: new embedders start, every stream is told to use them, and the
old ones are killed once every open stream reports batches of the new model. It never waits more
than ``WAIT_S`` at a time, and reaches Ray through ``Calls`` only (tests: in-process fakes).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from streamproc.errors import StreamprocError
from streamproc.metrics import Recorder
from streamproc.runtime.chain import Back
from streamproc.runtime.config import RuntimeConfig
from streamproc.runtime.control import Controller, Serving
from streamproc.runtime.outlet import Outlet
from streamproc.runtime.ray_actors import Taken

log = logging.getLogger(__name__)
WAIT_S = 0.25  # longest the driver, or a stream actor's take, waits before looking at stop requests
PROBE_S = 0.1  # how often a restarting stream actor is asked whether it is back


def ray_ready(refs: list[Any], timeout: float) -> list[Any]:
    """The refs among ``refs`` that are done, after waiting up to ``timeout`` for the first."""
    first, _ = ray.wait(refs, num_returns=1, timeout=timeout)
    return ray.wait(refs, num_returns=len(refs), timeout=0)[0] if first else []


@dataclass(frozen=True)
class Calls:
    """How the loop reaches the actors (``actor.method.remote(...)`` gives refs): Ray by default;
    a test puts in-process fake actors behind its own ``ready``, ``get`` and ``kill``."""

    ready: Callable[[list[Any], float], list[Any]] = ray_ready
    get: Callable[[Any], Any] = ray.get
    kill: Callable[[Any], None] = ray.kill


@dataclass
class StreamBook:
    """The driver's book-keeping of one stream actor."""

    sid: str
    actor: Any
    starting: bool = True  # a start() must answer before records are asked for
    calling: bool = False  # a start() or take() is out
    call_at: float = 0.0  # not before (a restarting actor is asked again every PROBE_S)
    stop_sent: bool = False
    done: bool = False
    restarts: int = 0
    next_track_id: int = 0  # the next track id no record has used (kept across actor restarts)
    version: str = ""  # model version of its latest aggregated batch
    taken: Taken | None = None  # its latest take (in-flight gauges)


@dataclass
class Pools:
    """The model actors. In a rolling upgrade the old embedders drain (no new work) until every open
    stream has moved to the new ones, then they are killed."""

    embedders: list[Any]
    detectors: list[Any]
    version: str = ""  # of the embedders serving new work
    start_embedders: Callable[[str], list[Any]] | None = None  # model name -> new embedding actors
    draining: list[Any] = field(default_factory=list)

    def add_embedders(self, actors: list[Any], version: str) -> bool:
        """Add ``actors``; True when they bring a new version (the others drain)."""
        new = version != self.version
        if new:
            self.draining, self.embedders = self.draining + self.embedders, []
        self.embedders, self.version = self.embedders + list(actors), version
        return new


class Loop:
    """The driver loop of one run; see the module docstring."""

    def __init__(
        self,
        runtime: RuntimeConfig,
        recorder: Recorder,
        stop: threading.Event,
        outlet: Outlet,
        pools: Pools,
        streams: dict[str, StreamBook],
        duration_s: float | None,
        control: Controller,
        calls: Calls = Calls(),
    ):
        self.rt = runtime
        self.recorder = recorder
        self.stop = stop
        self.outlet, self.control, self.calls = outlet, control, calls
        self.pools = pools
        self.streams = streams
        self.pending: dict[Any, tuple[str, Any]] = {}  # ref -> (kind, stream id or upgrade data)
        self.deadline = None if duration_s is None else time.monotonic() + duration_s
        self.stop_at: float | None = None

    def run(self) -> None:
        while not all(s.done for s in self.streams.values()):
            try:
                self._step()
            except KeyboardInterrupt:
                if self.stop.is_set():
                    raise
                log.warning("stopping: closing open tracks (press Ctrl-C again to abort)")
                self.stop.set()

    def _step(self) -> None:
        self._check_stop()
        self._upgrade()
        now = time.monotonic()
        for s in self.streams.values():
            if not (s.done or s.calling) and now >= s.call_at:
                if s.starting:
                    call = s.actor.start.remote(
                        s.next_track_id, self.pools.embedders, self.pools.version, self.pools.detectors
                    )
                else:
                    call = s.actor.take.remote(WAIT_S)
                self.pending[call] = ("start" if s.starting else "take", s.sid)
                s.calling = True
        taken = [s.taken for s in self.streams.values() if s.taken is not None and not s.done]
        self.recorder.gauge("in_flight", sum(t.in_flight for t in taken), stage="stream")
        self.recorder.gauge("in_flight", sum(t.embedding for t in taken), stage="embed")
        if not self.pending:
            time.sleep(PROBE_S)
            return
        for ref in self.calls.ready(list(self.pending), WAIT_S):
            kind, about = self.pending.pop(ref)
            if kind == "ready":
                self._on_ready(about, ref)
            elif kind in ("start", "take"):
                self._on_stream(self.streams[about], kind, ref)
            else:  # stop, use: a dead actor is found by its take
                with contextlib.suppress(RayActorError, RayTaskError):
                    self.calls.get(ref)

    def _check_stop(self) -> None:
        now = time.monotonic()
        if self.stop_at is None and (
            self.stop.is_set() or (self.deadline is not None and now >= self.deadline)
        ):
            self.stop_at = now
        if self.stop_at is None:
            return
        for s in self.streams.values():
            if s.done:
                continue
            if s.starting:  # restarting: its new incarnation has nothing open to close
                s.done = True
            elif not s.stop_sent:
                self.pending[s.actor.stop.remote()] = ("stop", s.sid)
                s.stop_sent = True
            elif now - self.stop_at > self.rt.stop_grace_s:
                log.warning("stream %s did not stop within %.0fs: killing it", s.sid, self.rt.stop_grace_s)
                self.calls.kill(s.actor)
                self._finish(s, f"did not stop within {self.rt.stop_grace_s:g}s after the stop request")

    def _on_stream(self, s: StreamBook, kind: str, ref: Any) -> None:
        s.calling = False
        try:
            value = self.calls.get(ref)
        except RayActorError as exc:
            if s.starting and not isinstance(exc, ActorDiedError):
                s.call_at = time.monotonic() + PROBE_S  # still restarting
            else:
                self._actor_died(s, exc)
            return
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            if not isinstance(cause, StreamprocError):
                raise  # a bug in the stream actor (or a model pool failed): the run ends with its traceback
            self.calls.kill(s.actor)  # a user-facing error: this stream ends
            self._finish(s, f"{type(cause).__name__}: {cause}")
            return
        if s.done:
            return
        if kind == "start":
            s.starting = False
            if s.restarts:
                log.info("stream actor of %s is back after a restart", s.sid)
            return
        s.taken = value
        for record in value.records:
            if isinstance(record, Back):
                self.outlet.on_back(record)
                s.version = record.model_version
                s.done = s.done or record.end_of_stream
            else:
                self.outlet.on_front(record)
                s.next_track_id = max(s.next_track_id, record.next_track_id)

    def _actor_died(self, s: StreamBook, exc: Exception) -> None:
        """``s``'s actor died. Ray restarts it (a new process: the file starts over) until its
        ``max_restarts`` are used up (``ActorDiedError``); it is started again once it answers."""
        if s.done:
            return
        if isinstance(exc, ActorDiedError) or s.restarts >= self.rt.max_restarts:
            self._finish(s, f"stream actor died {s.restarts + 1} times: {exc}")
            return
        s.restarts += 1
        log.warning("stream actor of %s died (%s); restarting, its source starts over", s.sid, exc)
        s.starting, s.stop_sent, s.taken, s.call_at = True, False, None, 0.0
        self.outlet.drop_in_flight(s.sid)

    def _finish(self, s: StreamBook, error: str) -> None:
        s.done = True
        self.outlet.fail(s.sid, error)

    # --- rolling model upgrades -----------------------------------------------------------------------
    def _upgrade(self) -> None:
        """Kill old embedders once every open stream has moved on; let the controller switch what it has prepared."""
        pools = self.pools
        if pools.draining and all(s.done or s.version == pools.version for s in self.streams.values()):
            for actor in pools.draining:
                log.info("rolling upgrade: a drained embedding actor stops")
                self.calls.kill(actor)
            pools.draining = []
        self.control.apply()

    def start_upgrade(self, serving: Serving) -> None:
        """Start the embedders of a newly promoted model (the controller's ``on_model``)."""
        if self.pools.start_embedders is None:
            return
        if any(kind == "ready" for kind, _ in self.pending.values()):
            log.warning("rolling upgrade to %s waits: another one is starting", serving.version)
            return
        log.info("rolling upgrade: starting %s embedding actors", serving.version)
        for actor in self.pools.start_embedders(serving.model):
            self.pending[actor.info.remote()] = ("ready", (actor, serving.version))

    def _on_ready(self, about: tuple[Any, str], ref: Any) -> None:
        actor, version = about
        try:
            got_version, _ = self.calls.get(ref)
        except (RayActorError, RayTaskError) as exc:
            log.error("rolling upgrade to %s failed, staying on the old model: %s", version, exc)
            self.calls.kill(actor)
            return
        if self.pools.add_embedders([actor], got_version):
            self.control.model_in_service(got_version)
        for s in self.streams.values():  # one about to start gets them after its start()
            if not s.done:
                self.pending[s.actor.use_embedders.remote(self.pools.embedders, got_version)] = ("use", s.sid)
        log.info("rolling upgrade: %s embedding actor serving; the old ones drain", got_version)
