"""The emit stage and its sinks: decisions leave the pipeline as events, each exactly once.

``Sink.write(decisions)`` checks the input, drops repeats of an event id within the call and hands
the rest to the subclass's ``_write``, which returns how many it really wrote (repeats of events
written before are not counted). Three sinks:

* ``JsonLinesSink(path)``: one ``Decision.to_event()`` JSON object per line, appended to ``path``
  (``'-'`` = standard output), flushed after every call; event ids written by this process are
  remembered (the last ``remember`` of them) and not written again.
* ``MemorySink()``: keeps ``(monotonic time, decision)`` pairs in ``seen``, repeats of earlier
  calls included, for a program that embeds the pipeline (and for tests that time events).
* ``RedisStreamSink(client, stream_key)``: one stream entry per event, with the fields
  ``event_id``, ``kind``, ``stream_id`` and ``event`` (the JSON object). A Lua script sets
  ``<prefix>:event:<event_id>`` with NX and a TTL and only then runs XADD, atomically, so a repeated
  write - from a retry, a replay or a restarted process - adds nothing while the key lives. If
  XADD fails the key is deleted again. Connection errors go through the injected ``Retry``
  policy; when it gives up the error is ``GalleryUnavailable``.

Example:
    >>> from streamproc.types import Decision
    >>> d = Decision("cam", 3, 0.0, 2.0, "ada", 0.4, 100, "v1", "g7")
    >>> sink = JsonLinesSink("-")
    >>> sink.write([d, d])  # doctest: +ELLIPSIS
    {"event_id": ...}
    1
"""

from __future__ import annotations

import json
import sys
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import redis

from streamproc.errors import ConfigError, GalleryError, GalleryUnavailable
from streamproc.retry import Retry, server_retry
from streamproc.stages.base import Stage
from streamproc.stages.config import EmitConfig
from streamproc.types import Decision, FrameBatch

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


class Remembered:
    """The last ``capacity`` ids seen, oldest forgotten first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class Sink(ABC):
    """Where events go; ``write(decisions) -> number written``, ``close()``."""

    name = "sink"

    def write(self, decisions: Sequence[Decision]) -> int:
        unique: dict[str, Decision] = {}
        for i, d in enumerate(decisions):
            if not isinstance(d, Decision):
                raise TypeError(f"{self.name}: decision {i}: expected Decision, got {type(d).__name__}")
            unique.setdefault(d.event_id, d)
        if not unique:
            return 0
        written = self._write(list(unique.values()))
        if not 0 <= written <= len(unique):
            raise RuntimeError(f"{self.name}: wrote {written} of {len(unique)} events")
        return written

    @abstractmethod
    def _write(self, decisions: list[Decision]) -> int:
        """Write decisions with distinct event ids; return how many were new."""

    def close(self) -> None:
        return None


class MemorySink(Sink):
    """Keeps every decision handed to it with the monotonic time it arrived; remembers no ids.

    Example:
        >>> from streamproc.types import Decision
        >>> sink = MemorySink()
        >>> sink.write([Decision("cam", 3, 0.0, 2.0, "ada", 0.4, 100, "v1", "g7")])
        1
        >>> [d.identity for _, d in sink.seen]
        ['ada']
    """

    name = "memory"

    def __init__(self) -> None:
        self.seen: list[tuple[float, Decision]] = []

    def _write(self, decisions: list[Decision]) -> int:
        now = time.monotonic()
        self.seen.extend((now, d) for d in decisions)
        return len(decisions)


class JsonLinesSink(Sink):
    """Appends one JSON event per line to a file, or to standard output for ``'-'``.

    Example:
        >>> sink = JsonLinesSink("/tmp/events.jsonl")  # doctest: +SKIP
        >>> sink.write(batch.decisions)  # doctest: +SKIP
        2
    """

    name = "jsonl"

    def __init__(self, path: str | Path, *, remember: int = 1_000_000):
        self.path = str(path)
        self._seen = Remembered(remember)
        self._file: IO[str] | None = None
        if self.path != "-":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise ConfigError(f"emit.jsonl_path: cannot open {self.path} for appending: {exc}") from exc

    def _write(self, decisions: list[Decision]) -> int:
        fresh = [d for d in decisions if d.event_id not in self._seen]
        if not fresh:
            return 0
        out = self._file if self._file is not None else sys.stdout
        out.write("".join(event_json(d) + "\n" for d in fresh))
        out.flush()
        for d in fresh:
            self._seen.add(d.event_id)
        return len(fresh)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RedisStreamSink(Sink):
    """XADDs each event to a Redis stream exactly once (per ``dedupe_ttl_s``), atomically.

    Example:
        >>> sink = RedisStreamSink(redis.Redis(port=6379), "streamproc:events")  # doctest: +SKIP
        >>> sink.write([decision, decision]), sink.write([decision])  # doctest: +SKIP
        (1, 0)
    """

    name = "redis-stream"

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

    def _write(self, decisions: list[Decision]) -> int:
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

        return sum(1 for entry_id in self._retry.call(attempt) if entry_id is not None)


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
        ready = [d for d in batch.decisions if self.ready(d)]
        if ready:
            for i, sink in enumerate(self.sinks):
                self.written[i] += sink.write(ready)
        return batch

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
