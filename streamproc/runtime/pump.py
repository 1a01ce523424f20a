"""One stream's scheduler, the same in both runners: ``Pump`` moves the batches of a ``StreamChain``
through the detector and the embedder and back, in batch order, with at most ``depth`` batches in between.

* ``feed(stop)``: read batches until ``depth`` are in flight, their picked frames sent to the
  detector; each batch is tracked, in order, once its faces are back (between reads when they
  already are, else waiting at the end), its crops sent to the embedder.
* ``drain()``: aggregate the oldest batch once its embeddings are back, several if they are; it
  waits for the oldest when ``depth`` are in flight or nothing more will be read.

``feed`` returns ``Front`` records, ``drain`` ``Back`` records; ``step`` does both. A model is reached
through a pool: ``submit`` / ``ready`` / ``result`` and the ``version`` it serves. In a stream actor
they are Ray actors (``ray_actors.RayPool``) or its own detector; in the local runner the models
themselves (``LocalPool``: what was submitted runs in one call when a result is first asked for).

Example:
    >>> pump = Pump(chain, LocalPool(embedder, "v1"), LocalPool(detect, merge=None))  # doctest: +SKIP
    >>> while not pump.done:  # doctest: +SKIP
    ...     records = pump.step()
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamproc.runtime.chain import Back, Front, StreamChain
from streamproc.types import Crops

log = logging.getLogger(__name__)


class Pool(Protocol):
    version: str  # of the model that answers (embedders)

    def submit(self, data: Any) -> Any: ...  # a handle

    def ready(self, handle: Any) -> bool: ...

    def result(self, handle: Any) -> Any: ...  # waits; raises what the model raised


@dataclass(eq=False)
class _Job:
    data: Any
    value: Any = None
    error: BaseException | None = None
    done: bool = False


class LocalPool:
    """A model in this process. Submitted work waits until its ``result`` is asked for; then the model
    runs once on everything submitted so far, joined by ``merge`` (a round of streams shares one
    call), or with ``merge=None`` on that work alone.

    >>> pool = LocalPool(lambda x: x * 2, merge=np.concatenate)
    >>> a, b = pool.submit(np.ones(2)), pool.submit(np.ones(1))
    >>> pool.result(b).tolist(), pool.ready(a)
    ([2.0], True)
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        version: str = "",
        merge: Callable[[list[Any]], Any] | None = Crops.concat,
    ):
        self.fn, self.version, self.merge = fn, version, merge
        self._waiting: list[_Job] = []

    def submit(self, data: Any) -> _Job:
        job = _Job(data)
        self._waiting.append(job)
        return job

    def ready(self, handle: _Job) -> bool:
        return handle.done or self.merge is None  # alone, it runs at once when asked for

    def result(self, handle: _Job) -> Any:
        if not handle.done:
            self._run(handle)
        if handle.error is not None:
            raise handle.error
        return handle.value

    def _run(self, handle: _Job) -> None:
        if self.merge is None:
            jobs, merged = [handle], handle.data
            self._waiting.remove(handle)
        else:
            jobs, self._waiting = self._waiting, []
            merged = self.merge([j.data for j in jobs])
        try:
            out = self.fn(merged)
        except Exception as exc:
            for j in jobs:
                j.error, j.done = exc, True
            return
        start = 0
        for j in jobs:
            j.value, j.done = out[start : start + len(j.data)], True
            start += len(j.data)


@dataclass(eq=False)
class _Batch:
    seq: int
    detect: Any = None  # the detector call's handle, until the batch is tracked
    sent: float = 0.0  # when its detector call went out, then its embedding call
    tracked: bool = False
    embed: Any = None  # the embedding call's handle (None: no crops)
    pool: Any = None  # the embedding pool it went to
    seconds: dict[str, float] = field(default_factory=dict)


class Pump:
    """One stream through its chain and the pools; see the module docstring."""

    def __init__(self, chain: StreamChain, embed: Pool, detect: Pool, depth: int = 1):
        # ``embed`` is set to another pool in a rolling upgrade: batches sent earlier finish where they are
        self.chain, self.embed, self.detect = chain, embed, detect
        self.depth = max(1, depth)
        self.batches: deque[_Batch] = deque()
        self.done = False  # the last batch was aggregated

    def step(self, stop: bool = False) -> list[Front | Back]:
        return [*self.feed(stop), *self.drain()]

    def feed(self, stop: bool = False) -> list[Front]:
        out: list[Front] = []
        while len(self.batches) < self.depth and not self.chain.reading_done:
            seq, images = self.chain.read(stop)
            if seq >= 0:
                handle = self.detect.submit(images) if len(images) else None
                self.batches.append(_Batch(seq, handle, time.perf_counter()))
            self._track(out, wait=False)  # what is detected already: its crops go out before the next read
        self._track(out, wait=True)
        return out

    def _track(self, out: list[Front], wait: bool) -> None:
        for batch in [b for b in self.batches if not b.tracked]:  # in batch order
            if not wait and batch.detect is not None and not self.detect.ready(batch.detect):
                return
            self._tracked(*self.chain.track(batch.seq, self._faces(batch)), batch, out)

    def _faces(self, batch: _Batch) -> list[Any]:
        if batch.detect is None:
            return []
        try:
            found = self.detect.result(batch.detect)
        except Exception as exc:  # a model failure (out of memory, a dead pool) ends this stream only
            log.warning("stream %s: detector failed (%s); closing it", self.chain.stream_id, exc)
            self.chain.detector_failed(batch.seq, exc)
            return []
        batch.seconds["detect"] = time.perf_counter() - batch.sent
        return list(found)

    def _tracked(self, front: Front, crops: Crops, batch: _Batch, out: list[Front]) -> None:
        front.seconds.update(batch.seconds)
        out.append(front)
        if front.seq < 0:  # the stream ended at an earlier batch
            self.batches.remove(batch)
            return
        batch.tracked, batch.pool, batch.sent = True, self.embed, time.perf_counter()
        if front.crops:
            batch.embed = self.embed.submit(crops)

    def drain(self) -> list[Back]:
        out: list[Back] = []
        while self.batches and self.batches[0].tracked:
            batch = self.batches[0]
            wait = len(self.batches) >= self.depth or self.chain.reading_done
            if batch.embed is not None and not wait and not batch.pool.ready(batch.embed):
                break
            empty = np.zeros((0, self.chain.embedding_dim), np.float32)
            embeddings = empty if batch.embed is None else batch.pool.result(batch.embed)
            back = self.chain.back(batch.seq, embeddings, batch.pool.version)
            if batch.embed is not None:
                back.seconds["embed"] = time.perf_counter() - batch.sent
            self.batches.popleft()
            out.append(back)
            self.done = back.end_of_stream
        return out
