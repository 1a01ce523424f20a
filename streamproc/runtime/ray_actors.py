"""The Ray actors of the pipeline (their roles: ``streamproc.runtime.pipeline``); they wrap plain
classes (``StreamChain`` and ``Pump``, detectors, ``Embedder``); nothing outside ``streamproc.runtime``
imports Ray.

* ``StreamActor``: a ``StreamWorker`` (one source's chain and pump, on a thread of its own) that
  calls the pools itself and hands its records to the driver through ``take``. It gets no task
  retries: a crashed one is restarted, and the driver starts it again.
* ``EmbedActor``: a ``MicroBatcher`` merges concurrent ``embed`` calls into model calls of up to
  ``embed_batch`` crops, waiting at most ``embed_max_wait_ms``; the model runs in a worker thread, so
  requests keep queueing (and batching) meanwhile. ``embed`` and ``detect`` are idempotent, so Ray
  retries them on a restarted actor.

Example:
    >>> batcher = MicroBatcher(lambda x: x * 2, max_items=64, max_wait_s=0.02)
    >>> asyncio.run(batcher.submit(np.ones((2, 3))))[0].tolist()
    [2.0, 2.0, 2.0]
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from streamproc.config import Config, DetectorConfig, EmbedderConfig
from streamproc.detect.base import Detector
from streamproc.runtime.chain import Back, Front, StreamChain
from streamproc.runtime.pump import LocalPool, Pool, Pump
from streamproc.sources.config import SourceConfig
from streamproc.types import Crops, Faces

log = logging.getLogger(__name__)


def set_threads(threads: int) -> None:
    """Bound torch and OpenCV to the CPUs the actor reserved."""
    import cv2
    import torch

    torch.set_num_threads(max(1, threads))
    cv2.setNumThreads(max(1, threads))


@dataclass
class _Request:
    items: Any  # an array or Crops: anything with len() that ``merge`` can join
    future: asyncio.Future[np.ndarray]
    arrived: float  # loop time of the submit


class MicroBatcher:
    """Merge concurrent ``submit(items)`` calls into calls of ``fn`` on up to ``max_items`` rows.

    A batch goes when it holds ``max_items`` rows or its oldest request waited ``max_wait_s``;
    requests are never split (one larger than ``max_items`` goes alone). ``fn`` runs in one worker
    thread, one call at a time, and must return one output row per input row.
    """

    def __init__(
        self,
        fn: Callable[[Any], np.ndarray],
        max_items: int,
        max_wait_s: float,
        merge: Callable[[list[Any]], Any] = np.concatenate,
    ):
        self.fn = fn
        self.merge = merge
        self.max_items = max(1, max_items)
        self.max_wait_s = max(0.0, max_wait_s)
        self.calls = 0  # model calls made (for tests and logs)
        self._queue: list[_Request] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed")

    async def submit(self, items: Any) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._run())
        assert self._arrived is not None
        items = items if isinstance(items, Crops) else np.asarray(items)
        request = _Request(items, loop.create_future(), loop.time())
        self._queue.append(request)
        self._arrived.set()
        return await request.future

    def _queued(self) -> int:
        return sum(len(r.items) for r in self._queue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._arrived is not None
        while True:
            await self._arrived.wait()  # set only while requests queue
            # the oldest request's wait started when it arrived, not when the model was last free:
            # what queued during a model call goes as soon as the call ends, once it has waited enough
            deadline = self._queue[0].arrived + self.max_wait_s
            while self._queued() < self.max_items and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            if not self._queue:
                self._arrived.clear()
            if not batch:
                continue
            try:
                merged = self.merge([r.items for r in batch])
                out = await loop.run_in_executor(self._pool, self.fn, merged)
                self.calls += 1
            except Exception as exc:
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            start = 0
            for r in batch:
                if not r.future.done():
                    r.future.set_result(out[start : start + len(r.items)])
                start += len(r.items)

    def _take(self) -> list[_Request]:
        taken: list[_Request] = []
        n = 0
        while self._queue and (not taken or n + len(self._queue[0].items) <= self.max_items):
            request = self._queue.pop(0)
            taken.append(request)
            n += len(request.items)
        return taken


@ray.remote
class EmbedActor:
    """One embedding model; ``embed(crops)`` calls of all streams are micro-batched together."""

    def __init__(self, config: EmbedderConfig, threads: int, max_items: int, max_wait_ms: float):
        set_threads(threads)
        from streamproc.models.embedder import Embedder

        self.embedder = Embedder(config)
        self.batcher = MicroBatcher(self.embedder, max_items, max_wait_ms / 1000.0, merge=Crops.concat)

    async def info(self) -> tuple[str, int]:
        return self.embedder.version, self.embedder.card.embedding_dim

    async def embed(self, crops: Crops) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.embedder.card.embedding_dim), np.float32)
        return await self.batcher.submit(crops)


@ray.remote
class DetectActor:
    """One face detector; ``detect(images)`` for any stream, one call at a time."""

    def __init__(self, config: DetectorConfig, threads: int):
        set_threads(threads)
        from streamproc.detect import build_detector

        self.detector = build_detector(config)

    def detect(self, images: np.ndarray) -> list[Faces]:
        return self.detector(list(images))


class RayPool:
    """Ray actors serving ``method`` (``embed`` or ``detect``), called from a stream actor; each call
    goes to the one this stream has the fewest calls out with, in turn from a random one (streams
    do not all start on the first)."""

    def __init__(self, actors: list[Any], method: str, version: str = ""):
        self.actors, self.method, self.version = actors, method, version
        self._out, self._turn = [0] * len(actors), random.randrange(max(1, len(actors)))
        self._worker: dict[Any, int] = {}

    def submit(self, data: Any) -> Any:
        n = len(self.actors)
        i = min(range(n), key=lambda j: (self._out[j], (j - self._turn) % n))
        self._out[i], self._turn = self._out[i] + 1, i + 1
        ref = getattr(self.actors[i], self.method).remote(data)
        self._worker[ref] = i
        return ref

    def ready(self, ref: Any) -> bool:
        return bool(ray.wait([ref], timeout=0)[0])

    def result(self, ref: Any) -> Any:
        try:
            return ray.get(ref)
        finally:
            self._out[self._worker.pop(ref)] -= 1


@dataclass
class Taken:
    """What a stream actor hands the driver: its records since the last ``take``, and its load."""

    records: list[Front | Back]
    in_flight: int  # batches between read and aggregate
    embedding: int  # of them, batches whose embeddings are awaited


OUTBOX = 64  # records a stream actor holds for the driver before its pump waits


class StreamWorker:
    """What a stream actor is: one source's ``StreamChain`` and its ``Pump``, run by a thread of its
    own once ``start`` names the model pools; the driver collects the records with ``take``.
    A bug (any exception but a stream's own end) stops the pump and is raised by the next ``take``.
    """

    def __init__(self, chain: StreamChain, depth: int, detector: Detector | None = None):
        self.chain, self.depth, self.detector = chain, depth, detector  # detector: its own, else the pool's
        self.pump: Pump | None = None
        self.stopping = threading.Event()
        self._cond = threading.Condition()
        self._out: list[Front | Back] = []
        self._error: BaseException | None = None

    def start(self, first_track_id: int, embedders: list[Any], version: str, detectors: list[Any]) -> str:
        """Start pumping (once; after a restart the driver passes the next unused track id)."""
        if self.pump is None:
            if first_track_id:
                self.chain.resume(first_track_id)
            if (own := self.detector) is not None:
                detect: Pool = LocalPool(lambda images: own(list(images)), merge=None)
            else:
                detect = RayPool(detectors, "detect")
            self.pump = Pump(self.chain, RayPool(embedders, "embed", version), detect, self.depth)
            threading.Thread(target=self._run, name="pump", daemon=True).start()
        return self.chain.stream_id

    def _run(self) -> None:
        assert self.pump is not None
        try:
            while not self.pump.done:
                records = self.pump.step(self.stopping.is_set())
                with self._cond:
                    self._out += records
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: len(self._out) < OUTBOX)
        except BaseException as exc:  # the driver raises it (a stream's own errors end it in the chain)
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def take(self, timeout: float) -> Taken:
        """The records produced since the last call, waiting up to ``timeout`` for the first."""
        with self._cond:
            self._cond.wait_for(lambda: self._out or self._error is not None, timeout)
            records, self._out = self._out, []
            self._cond.notify_all()
            if not records and self._error is not None:
                raise self._error
        batches = list(self.pump.batches) if self.pump else []
        return Taken(records, len(batches), sum(1 for b in batches if b.embed is not None))

    def use_embedders(self, embedders: list[Any], version: str) -> None:
        """A rolling upgrade: the next batches are embedded by ``embedders`` (model ``version``)."""
        if self.pump is not None:
            self.pump.embed = RayPool(embedders, "embed", version)

    def stop(self) -> None:
        """End the stream: its open tracks are decided. Closing the source wakes a read that waits
        (a camera that refuses, retried forever)."""
        self.stopping.set()
        self.chain.source.close()


@ray.remote
class StreamActor(StreamWorker):
    """A ``StreamWorker`` in its own process, with torch / OpenCV bound to the CPUs it reserved."""

    def __init__(
        self,
        source: SourceConfig,
        config: Config,
        model_version: str,
        dim: int,
        threads: int,
        own_detector: bool,
    ):
        set_threads(threads)
        from streamproc.detect import build_detector

        chain = StreamChain(source, config, model_version, dim)
        detector = build_detector(config.detector) if own_detector else None
        super().__init__(chain, config.runtime.max_in_flight, detector)
