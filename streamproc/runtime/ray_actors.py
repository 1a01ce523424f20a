"""The Ray actors of the pipeline (their roles: ``streamproc.runtime.pipeline``); they wrap plain
classes (``StreamChain``, detectors, ``Embedder``), and nothing outside ``streamproc.runtime`` imports Ray.

* ``StreamActor``: ``front()`` / ``read()`` / ``track()`` return two objects (``num_returns=2``):
  the small record for the driver, and the crops or frames, which go to a pool actor through the
  object store. A synchronous actor runs one caller's calls in submission order, which the chain
  needs; it gets no task retries (they would break that order): a crashed one is restarted.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from streamproc.config import Config, DetectorConfig, EmbedderConfig
from streamproc.runtime.chain import Back, Front, Read, StreamChain
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
        request = _Request(items if isinstance(items, Crops) else np.asarray(items), loop.create_future())
        self._queue.append(request)
        self._arrived.set()
        return await request.future

    def _queued(self) -> int:
        return sum(len(r.items) for r in self._queue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._arrived is not None
        while True:
            await self._arrived.wait()
            deadline = loop.time() + self.max_wait_s
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

    async def calls(self) -> int:
        return self.batcher.calls


@ray.remote
class DetectActor:
    """One face detector; ``detect(images)`` for any stream, one call at a time."""

    def __init__(self, config: DetectorConfig, threads: int):
        set_threads(threads)
        from streamproc.detect import build_detector

        self.detector = build_detector(config)

    def ready(self) -> bool:
        return True

    def detect(self, images: np.ndarray) -> list[Faces]:
        return self.detector(list(images))


@ray.remote
class StreamActor:
    """One source with its detect/track/aggregate state (``StreamChain``) in its own process.

    With ``own_detector`` it runs the detector itself (``front``); else the driver sends the
    frames of ``read`` to the detector pool and the faces back with ``track``.
    """

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

        detector = build_detector(config.detector) if own_detector else None
        self.chain = StreamChain.build(source, config, detector, model_version, dim)

    def ready(self, first_track_id: int = 0) -> str:
        """Answers once built; after a restart the driver passes the next unused track id."""
        if first_track_id:
            self.chain.resume(first_track_id)
        return self.chain.stream_id

    @ray.method(num_returns=2)
    def front(self, stop: bool = False) -> tuple[Front, Crops]:
        return self.chain.front(stop=stop)

    @ray.method(num_returns=2)
    def read(self, stop: bool = False) -> tuple[Read, np.ndarray]:
        return self.chain.read(stop=stop)

    @ray.method(num_returns=2)
    def track(self, seq: int, found: list[Faces]) -> tuple[Front, Crops]:
        return self.chain.track(seq, found)

    def back(self, seq: int, embeddings: np.ndarray, model_version: str | None = None) -> Back:
        return self.chain.back(seq, embeddings, model_version)

    def close(self) -> None:
        self.chain.close()
