"""The emit stage and its sinks: decisions leave the pipeline as events, each exactly once.

The sinks are the one place repeats are dropped (nothing upstream dedupes): a stream actor that
restarts replays its file and yields the same event ids again. ``Sink.write(decisions)`` checks the
input, drops event ids it wrote before (the last ``IDS_REMEMBERED``, kept compactly by
``RecentIds``) and hands the rest to the subclass's ``_write``; it returns the events written now.
Three sinks:

* ``JsonLinesSink(path)``: one ``Decision.to_event()`` JSON object per line, appended to ``path``
  (``'-'`` = standard output), flushed after every call.
* ``MemorySink()``: keeps ``(monotonic time, decision)`` pairs in ``seen``, for a program that
  embeds the pipeline (and for tests that time events).
* ``RedisStreamSink(client, stream_key)``: one stream entry per event, with the fields
  ``event_id``, ``kind``, ``stream_id`` and ``event`` (the JSON object). It remembers no ids
  itself: a Lua script sets ``<prefix>:event:<event_id>`` with NX and a TTL and only then runs XADD,
  atomically, so a repeated write - from a retry, a replay or a restarted process - adds nothing
  while the key lives. If XADD fails the key is deleted again. Connection errors go through the
  injected ``Retry`` policy; when it gives up the error is ``GalleryUnavailable``.

Example:
    >>> from streamproc.types import Decision
    >>> d = Decision("cam", 3, 0.0, 2.0, "ada", 0.4, 100, "v1", "g7")
    >>> sink = JsonLinesSink("-")
    >>> len(sink.write([d, d])), len(sink.write([d]))  # doctest: +ELLIPSIS
    {"event_id": ...}
    (1, 0)
"""

from __future__ import annotations

import json
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import redis

from streamproc.errors import ConfigError, GalleryError, GalleryUnavailable
from streamproc.retry import Retry, server_retry
from streamproc.stages.base import Stage
from streamproc.stages.config import EmitConfig
from streamproc.types import Decision, FrameBatch

IDS_REMEMBERED = 1_000_000  # event ids a sink keeps to drop replays (about 9 MB, see RecentIds)
# KEYS[1] dedupe key, KEYS[2] stream; ARGV[1] ttl s, ARGV[2] maxlen (0 = none), ARGV[3..] field/value pairs.
_ADD_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return false
end
local id
if tonumber(ARGV[2]) > 0 then
  id = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.pcall('XADD', KEYS[2], '*', unpack(ARGV, 3))
end
if type(id) == 'table' and id.err then
  redis.call('DEL', KEYS[1])
end
return id
"""


def event_json(decision: Decision) -> str:
    """The decision's event as one line of JSON."""
    return json.dumps(decision.to_event(), ensure_ascii=False)


class RecentIds:
    """The last ``capacity`` event ids (at least), oldest forgotten first, in about 8 bytes an id.

    An id is kept as its first 64 bits; full chunks of ``chunk`` ids are frozen into sorted arrays
    searched by bisection (1M ids: about 9 MB, against 153 MB as a dict of strings; measured in
    ``tests/unit/stages/test_recent_ids.py``).

    Example:
        >>> ids = RecentIds(capacity=2, chunk=1)
        >>> ids.add("00000000000000aa"); ids.add("00000000000000bb"); ids.add("00000000000000cc")
        >>> "00000000000000aa" in ids, "00000000000000cc" in ids
        (False, True)
    """

    def __init__(self, capacity: int, chunk: int = 65_536):
        self.chunk = max(1, min(chunk, capacity))
        self._frozen: deque[np.ndarray] = deque(maxlen=-(-capacity // self.chunk))
        self._open: set[int] = set()

    @staticmethod
    def _key(event_id: str) -> int:
        return int(event_id[:16], 16)

    def __contains__(self, event_id: str) -> bool:
        key = self._key(event_id)
        if key in self._open:
            return True
        probe = np.uint64(key)
        for ids in self._frozen:
            i = int(np.searchsorted(ids, probe))
            if i < len(ids) and ids[i] == probe:
                return True
        return False

    def add(self, event_id: str) -> None:
        self._open.add(self._key(event_id))
        if len(self._open) >= self.chunk:
            self._frozen.append(np.sort(np.fromiter(self._open, np.uint64, len(self._open))))
            self._open = set()


class Sink(ABC):
    """Where events go, each at most once: ``write(decisions)`` returns the ones written now.

    Repeats of an event id (a replayed batch, a retry) are dropped here, at the pipeline's one
    exactly-once boundary: by the last ``remember`` ids written (``RecentIds``), or, with
    ``remember = None``, by the subclass's server (Redis keeps a key per event).
    """

    name = "sink"
    remember: int | None = IDS_REMEMBERED
    _ids: RecentIds | None = None

    def write(self, decisions: Sequence[Decision]) -> list[Decision]:
        if self.remember is not None and self._ids is None:
            self._ids = RecentIds(self.remember)
        fresh: dict[str, Decision] = {}
        for i, d in enumerate(decisions):
            if not isinstance(d, Decision):
                raise TypeError(f"{self.name}: decision {i}: expected Decision, got {type(d).__name__}")
            if self._ids is None or d.event_id not in self._ids:
                fresh.setdefault(d.event_id, d)
        if not fresh:
            return []
        written = self._write(list(fresh.values()))
        if self._ids is not None:
            for d in written:
                self._ids.add(d.event_id)
        return written

    @abstractmethod
    def _write(self, decisions: list[Decision]) -> list[Decision]:
        """Write decisions with distinct event ids; return the ones written."""

    def close(self) -> None:
        return None


class MemorySink(Sink):
    """Keeps every event written to it with the monotonic time it arrived.

    Example:
        >>> from streamproc.types import Decision
        >>> sink = MemorySink()
        >>> len(sink.write([Decision("cam", 3, 0.0, 2.0, "ada", 0.4, 100, "v1", "g7")]))
        1
        >>> [d.identity for _, d in sink.seen]
        ['ada']
    """

    name = "memory"

    def __init__(self) -> None:
        self.seen: list[tuple[float, Decision]] = []

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        now = time.monotonic()
        self.seen.extend((now, d) for d in decisions)
        return decisions


class JsonLinesSink(Sink):
    """Appends one JSON event per line to a file, or to standard output for ``'-'``.

    Example:
        >>> sink = JsonLinesSink("/tmp/events.jsonl")  # doctest: +SKIP
        >>> len(sink.write(batch.decisions))  # doctest: +SKIP
        2
    """

    name = "jsonl"

    def __init__(self, path: str | Path, *, remember: int = IDS_REMEMBERED):
        self.path = str(path)
        self.remember = remember
        self._file: IO[str] | None = None
        if self.path != "-":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise ConfigError(f"emit.jsonl_path: cannot open {self.path} for appending: {exc}") from exc

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        out = self._file if self._file is not None else sys.stdout
        out.write("".join(event_json(d) + "\n" for d in decisions))
        out.flush()
        return decisions

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RedisStreamSink(Sink):
    """XADDs each event to a Redis stream exactly once (per ``dedupe_ttl_s``), atomically.

    Example:
        >>> sink = RedisStreamSink(redis.Redis(port=6379), "streamproc:events")  # doctest: +SKIP
        >>> len(sink.write([decision, decision])), len(sink.write([decision]))  # doctest: +SKIP
        (1, 0)
    """

    name = "redis-stream"
    remember = None  # the Lua script's key per event drops repeats, across processes too

    def __init__(
        self,
        client: redis.Redis,
        stream_key: str,
        *,
        retry: Retry | None = None,
        dedupe_ttl_s: int = 7 * 24 * 3600,
        key_prefix: str | None = None,
        maxlen: int | None = None,
    ):
        if dedupe_ttl_s < 1:
            raise ConfigError(f"dedupe_ttl_s: expected at least 1 second, got {dedupe_ttl_s}")
        self.client = client
        self.stream_key = stream_key
        self.key_prefix = key_prefix or stream_key
        self.dedupe_ttl_s = dedupe_ttl_s
        self.maxlen = maxlen or 0
        self._retry = retry or server_retry()
        self._script = client.register_script(_ADD_ONCE)
        kw = client.connection_pool.connection_kwargs
        self._where = str(kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}")

    def dedupe_key(self, event_id: str) -> str:
        return f"{self.key_prefix}:event:{event_id}"

    def _fields(self, decision: Decision) -> list[Any]:
        return [
            "event_id", decision.event_id,
            "kind", decision.kind,
            "stream_id", decision.stream_id,
            "event", event_json(decision),
        ]  # fmt: skip

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        def attempt() -> list[Any]:
            try:
                pipe = self.client.pipeline(transaction=False)
                for d in decisions:
                    keys = [self.dedupe_key(d.event_id), self.stream_key]
                    self._script(
                        keys=keys, args=[self.dedupe_ttl_s, self.maxlen, *self._fields(d)], client=pipe
                    )
                return pipe.execute()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise GalleryUnavailable(f"event Redis at {self._where} is unreachable: {exc}") from exc
            except redis.ResponseError as exc:
                raise GalleryError(
                    f"event Redis at {self._where} refused to add to stream {self.stream_key!r}: {exc}"
                ) from exc

        added = self._retry.call(attempt)
        return [d for d, entry_id in zip(decisions, added, strict=True) if entry_id is not None]


def has_match(decision: Decision) -> bool:
    """Ready to emit: the match stage has looked it up in a gallery."""
    return decision.gallery_version != ""


class EmitStage(Stage):
    """Writes the batch's ready decisions to every sink; the batch passes through unchanged.

    Example:
        >>> stage = EmitStage([JsonLinesSink("-")])
        >>> stage.written
        [0]
    """

    name = "emit"

    def __init__(self, sinks: Sequence[Sink], *, ready: Callable[[Decision], bool] = has_match):
        self.sinks = list(sinks)
        self.ready = ready
        self.written = [0] * len(self.sinks)  # new events per sink, since start

    @classmethod
    def from_config(
        cls, config: EmitConfig, *, redis_client: redis.Redis | None = None, retry: Retry | None = None
    ) -> EmitStage:
        sinks: list[Sink] = []
        if config.jsonl_path is not None:
            sinks.append(JsonLinesSink(config.jsonl_path))
        if config.redis_stream is not None:
            if redis_client is None:
                raise ConfigError(
                    f"emit.redis_stream is {config.redis_stream!r} but no Redis client was given: "
                    "configure the gallery URL or set emit.redis_stream=null"
                )
            sinks.append(
                RedisStreamSink(
                    redis_client,
                    config.redis_stream,
                    retry=retry,
                    dedupe_ttl_s=config.dedupe_ttl_s,
                    maxlen=config.stream_maxlen,
                )
            )
        return cls(sinks)

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.write(batch.decisions)
        return batch

    def write(self, decisions: Sequence[Decision]) -> list[Decision]:
        """Hand the ready decisions to every sink; returns those some sink wrote now (all of them
        without sinks), in their order: a replayed decision no sink wrote again is not among them."""
        ready = [d for d in decisions if self.ready(d)]
        if not ready or not self.sinks:
            return ready
        new: set[str] = set()
        for i, sink in enumerate(self.sinks):
            written = sink.write(ready)
            self.written[i] += len(written)
            new.update(d.event_id for d in written)
        return [d for d in ready if d.event_id in new]

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
