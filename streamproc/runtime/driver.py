"""The driver loop of ``RayRunner``: what is in flight, what to submit next, what came back.

Per batch of a stream, with detection in the stream actor: ``front`` -> ``embed`` -> ``back``; with
a detector pool: ``read`` -> ``detect`` -> ``track`` (handled like a front) -> ``embed`` -> ``back``.
``track`` and ``back`` are submitted in batch order only; at most ``runtime.max_in_flight`` batches
of a stream are between their first call and the end of their ``back``. The loop waits with
``ray.wait`` on the outstanding calls (a bounded set) and never more than ``WAIT_S`` at a time, so
stop requests are seen promptly. Ray is reached through ``Calls`` only, so a test drives the loop
with in-process fake actors (``tests/unit/runtime/test_driver.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from streamproc.errors import StreamprocError
from streamproc.metrics import Recorder
from streamproc.runtime.chain import Back, Front, Read
from streamproc.runtime.config import RuntimeConfig
from streamproc.runtime.control import Controller, Serving
from streamproc.runtime.outlet import Outlet
from streamproc.types import Faces

log = logging.getLogger(__name__)
WAIT_S = 0.25  # longest the driver sleeps in ray.wait before looking at stop requests


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
    epoch: int = 0  # bumped when the actor restarts: results of older epochs are ignored
    next_seq: int = 0
    next_track: int = 0
    next_back: int = 0
    in_flight: int = 0
    reading_done: bool = False  # a record said last: ask for no more batches
    stopping: bool = False
    done: bool = False
    restarts: int = 0
    next_track_id: int = 0  # the next track id no batch has used (kept across actor restarts)
    recovering: bool = False  # its actor is being restarted: nothing is submitted until ready() answers
    probing: bool = False  # a ready() call is out
    probe_at: float = 0.0  # when to ask ready() next
    found: dict[int, list[Faces]] = field(default_factory=dict)  # seq -> detections awaiting track()
    ready: dict[int, tuple[np.ndarray, str | None]] = field(
        default_factory=dict
    )  # seq -> (embeddings, version)

    def reset(self) -> None:
        self.epoch += 1
        self.next_seq = self.next_track = self.next_back = self.in_flight = 0
        self.reading_done, self.stopping = False, False
        self.found.clear()
        self.ready.clear()


@dataclass
class _Call:
    kind: str  # read | detect | front | embed | back
    sid: str
    epoch: int
    seq: int
    data: Any = None  # the images or crops ref of a read / front, kept alive until it is handled
    items: int = 0
    sent: float = 0.0
    worker: int = -1  # index in its pool (detect, embed)


_ORDER = {"ready": -1, "probe": -1, "read": 0, "detect": 1, "front": 2, "embed": 3, "back": 4}
PROBE_S = 0.1  # how often a restarting stream actor is asked whether it is back


class Pools:
    """The model actors, each with a count of its outstanding calls (the least loaded gets the next).

    Embedding actors are never removed from the lists (indices stay valid for calls in flight);
    during a rolling upgrade the old ones are ``draining`` (no new work) until their last call
    returns, then killed (``retired``). ``versions[i]`` is the model version of embedder ``i``.
    """

    def __init__(
        self,
        embedders: list[Any],
        detectors: list[Any],
        version: str = "",
        start_embedders: Callable[[str], list[Any]] | None = None,
    ):
        self.embedders, self.detectors = embedders, detectors
        self.embed_load = [0] * len(embedders)
        self.detect_load = [0] * len(detectors)
        self.versions = [version] * len(embedders)
        self.draining: set[int] = set()
        self.retired: set[int] = set()
        self.start_embedders = start_embedders  # model name -> new embedding actors (rolling upgrades)

    @staticmethod
    def pick(load: list[int]) -> int:
        i = int(np.argmin(load))
        load[i] += 1
        return i

    def pick_embedder(self) -> int:
        active = [i for i in range(len(self.embedders)) if i not in self.draining and i not in self.retired]
        i = min(active, key=lambda j: self.embed_load[j])
        self.embed_load[i] += 1
        return i

    def add_embedders(self, actors: list[Any], version: str) -> None:
        """Shift new work to ``actors``; every live embedder of another version drains."""
        self.draining |= {i for i, v in enumerate(self.versions) if v != version and i not in self.retired}
        self.embedders += actors
        self.embed_load += [0] * len(actors)
        self.versions += [version] * len(actors)

    def retire_drained(self) -> list[Any]:
        """The draining actors with no call left; they are marked retired (the caller kills them)."""
        done = [i for i in self.draining if self.embed_load[i] == 0]
        self.draining -= set(done)
        self.retired |= set(done)
        return [self.embedders[i] for i in done]


class Loop:
    """The driver loop of one run: submit within the in-flight bounds, handle what finished."""

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
        self.pending: dict[Any, _Call] = {}
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
        for stream in self.streams.values():
            if stream.recovering:
                self._probe(stream)
                continue
            while not (stream.done or stream.reading_done or stream.stopping) and (
                stream.in_flight < self.rt.max_in_flight
            ):
                self._next_batch(stream, stop=False)
        rec = self.recorder
        rec.gauge("in_flight", sum(s.in_flight for s in self.streams.values()), stage="stream")
        rec.gauge("in_flight", sum(self.pools.embed_load), stage="embed")
        rec.gauge("in_flight", sum(self.pools.detect_load), stage="detect")
        # results held by the driver until the earlier batches of their stream are through
        rec.gauge("queue_depth", sum(len(s.found) for s in self.streams.values()), stage="track")
        rec.gauge("queue_depth", sum(len(s.ready) for s in self.streams.values()), stage="back")
        if not self.pending:
            return
        ready = self.calls.ready(list(self.pending), WAIT_S)
        calls = sorted(((self.pending.pop(r), r) for r in ready), key=lambda c: (_ORDER[c[0].kind], c[0].seq))
        for call, ref in calls:
            self._handle(call, ref)
        for stream in self.streams.values():
            self._submit_in_order(stream)

    # --- submitting ---------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        now = time.monotonic()
        if self.stop_at is None and (
            self.stop.is_set() or (self.deadline is not None and now >= self.deadline)
        ):
            self.stop_at = now
        if self.stop_at is None:
            return
        for s in self.streams.values():
            if s.recovering and not s.done:  # restarting: its new incarnation has nothing open to close
                s.done = True
                continue
            if not s.done and not s.reading_done and not s.stopping:
                self._next_batch(s, stop=True)
                s.stopping = True
            elif not s.done and now - self.stop_at > self.rt.stop_grace_s:
                log.warning("stream %s did not stop within %.0fs: killing it", s.sid, self.rt.stop_grace_s)
                self.calls.kill(s.actor)
                self._finish(s, f"did not stop within {self.rt.stop_grace_s:g}s after the stop request")

    def _probe(self, s: StreamBook) -> None:
        """Ask a restarting stream actor whether it is back (one call at a time, every PROBE_S)."""
        if not s.done and not s.probing and time.monotonic() >= s.probe_at:
            self.pending[s.actor.ready.remote(s.next_track_id)] = _Call("probe", s.sid, s.epoch, -1)
            s.probing = True

    def _next_batch(self, s: StreamBook, stop: bool) -> None:
        kind = "read" if self.pools.detectors else "front"
        meta_ref, data_ref = getattr(s.actor, kind).remote(stop)
        self.pending[meta_ref] = _Call(kind, s.sid, s.epoch, s.next_seq, data=data_ref)
        s.next_seq += 1
        s.in_flight += 1

    def _submit_in_order(self, s: StreamBook) -> None:
        while not s.done and s.next_track in s.found:
            seq = s.next_track
            meta_ref, crops_ref = s.actor.track.remote(seq, s.found.pop(seq))
            self.pending[meta_ref] = _Call("front", s.sid, s.epoch, seq, data=crops_ref)
            s.next_track += 1
        while not s.done and s.next_back in s.ready:
            seq = s.next_back
            embeddings, version = s.ready.pop(seq)
            ref = s.actor.back.remote(seq, embeddings, version)
            self.pending[ref] = _Call("back", s.sid, s.epoch, seq)
            s.next_back += 1

    def _to_pool(self, kind: str, s: StreamBook, seq: int, data_ref: Any, items: int) -> None:
        if kind == "detect":
            i = self.pools.pick(self.pools.detect_load)
            ref = self.pools.detectors[i].detect.remote(data_ref)
        else:
            i = self.pools.pick_embedder()
            ref = self.pools.embedders[i].embed.remote(data_ref)
        self.pending[ref] = _Call(kind, s.sid, s.epoch, seq, items=items, sent=time.perf_counter(), worker=i)

    # --- handling results ---------------------------------------------------------------------------
    def _handle(self, call: _Call, ref: Any) -> None:
        if call.kind == "ready":
            self._on_ready(call, ref)
            return
        s = self.streams[call.sid]
        pooled = call.kind in ("detect", "embed")
        if call.kind == "probe":
            s.probing = False
        if call.kind == "embed":
            self.pools.embed_load[call.worker] -= 1
        elif call.kind == "detect":
            self.pools.detect_load[call.worker] -= 1
        try:
            value = self.calls.get(ref)
        except RayActorError as exc:
            if call.kind == "probe" and not isinstance(exc, ActorDiedError):
                s.probe_at = time.monotonic() + PROBE_S  # still restarting
                return
            if pooled:
                raise  # a pool is shared: without it nothing can go on
            self._actor_died(s, call, exc)
            return
        except RayTaskError as exc:
            if call.kind == "embed":
                raise
            if call.epoch != s.epoch or s.done:
                return
            cause = getattr(exc, "cause", None) or exc
            if call.kind != "detect" and not isinstance(cause, StreamprocError):
                raise  # a bug in the stream actor: the run ends with its traceback, as with the local runner
            self.calls.kill(s.actor)  # a user-facing error, or the detector failed: this stream ends
            self._finish(s, f"{type(cause).__name__}: {cause}")
            return
        if s.done or call.epoch != s.epoch:
            return
        if call.kind == "probe":  # the restarted actor answers: a file starts over, a camera reconnects
            s.recovering = False
            log.info("stream actor of %s is back after a restart", s.sid)
        elif call.kind == "read":
            self._on_read(s, value, call.data)
        elif call.kind == "detect":
            self.outlet.on_detect(s.sid, call.items, time.perf_counter() - call.sent)
            s.found[call.seq] = value
        elif call.kind == "front":
            self._on_front(s, value, call.data)
        elif call.kind == "embed":
            self.outlet.on_embed(call.items, time.perf_counter() - call.sent)
            s.ready[call.seq] = (value, self.pools.versions[call.worker])
        else:
            self._on_back(s, value)

    def _on_read(self, s: StreamBook, read: Read, images_ref: Any) -> None:
        if read.last:
            s.reading_done = True
        if read.seq < 0:  # asked for after the last batch: nothing there
            s.in_flight -= 1
        elif read.detect_frames:
            self._to_pool("detect", s, read.seq, images_ref, read.detect_frames)
        else:
            s.found[read.seq] = []

    def _on_front(self, s: StreamBook, front: Front, crops_ref: Any) -> None:
        if front.last:
            s.reading_done = True
        if front.seq < 0:  # asked for after the last batch: nothing there
            s.in_flight -= 1
            return
        self.outlet.on_front(front)
        s.next_track_id = max(s.next_track_id, front.next_track_id)
        if front.crops:
            self._to_pool("embed", s, front.seq, crops_ref, front.crops)
        else:
            s.ready[front.seq] = (np.zeros((0, 1), np.float32), None)

    def _on_back(self, s: StreamBook, back: Back) -> None:
        s.in_flight -= 1
        self.outlet.on_back(back)
        if back.end_of_stream:
            s.done = True

    def _actor_died(self, s: StreamBook, call: _Call, exc: Exception) -> None:
        """A call of ``s`` failed because its actor died. Every call in flight fails with it, and
        calls made while Ray restarts the actor fail at once (``ActorUnavailableError``): one death
        counts once, and nothing is submitted until the restarted actor answers ``ready()``.
        ``ActorDiedError``: Ray will not restart it (its ``max_restarts`` are used up)."""
        if call.epoch != s.epoch or s.done or (s.recovering and not isinstance(exc, ActorDiedError)):
            return
        if isinstance(exc, ActorDiedError) or s.restarts >= self.rt.max_restarts:
            self._finish(s, f"stream actor died {s.restarts + 1} times: {exc}")
            return
        s.restarts += 1
        log.warning("stream actor of %s died (%s); restarting, its source starts over", s.sid, exc)
        s.reset()
        s.recovering, s.probing, s.probe_at = True, False, 0.0
        self.outlet.drop_in_flight(s.sid)

    def _finish(self, s: StreamBook, error: str) -> None:
        s.done = True
        self.outlet.fail(s.sid, error)

    # --- rolling model upgrades -----------------------------------------------------------------------
    def _upgrade(self) -> None:
        """Kill old embedders once drained; let the controller switch what it has prepared."""
        for actor in self.pools.retire_drained():
            log.info("rolling upgrade: a drained embedding actor stops")
            self.calls.kill(actor)
        self.control.apply()

    def start_upgrade(self, serving: Serving) -> None:
        """Start the embedders of a newly promoted model (the controller's ``on_model``)."""
        if self.pools.start_embedders is None:
            return
        if any(c.kind == "ready" for c in self.pending.values()):
            log.warning("rolling upgrade to %s waits: another one is starting", serving.version)
            return
        log.info("rolling upgrade: starting %s embedding actors", serving.version)
        actors = self.pools.start_embedders(serving.model)
        for actor in actors:
            self.pending[actor.info.remote()] = _Call("ready", "", 0, -1, data=(actor, serving.version))

    def _on_ready(self, call: _Call, ref: Any) -> None:
        actor, version = call.data
        try:
            got_version, _ = self.calls.get(ref)
        except (RayActorError, RayTaskError) as exc:
            log.error("rolling upgrade to %s failed, staying on the old model: %s", version, exc)
            self.calls.kill(actor)
            return
        self.pools.add_embedders([actor], got_version)
        self.control.model_in_service(got_version)
        log.info("rolling upgrade: %s embedding actor serving; the old ones drain", got_version)
