"""Sinks: JSON lines on disk, and a real redis-server stream written exactly once per event."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry

from streamproc.errors import ConfigError, GalleryError, GalleryUnavailable
from streamproc.retry import ConstantBackoff, Retry
from streamproc.stages.config import EmitConfig
from streamproc.stages.emit import EmitStage, JsonLinesSink, MemorySink, RedisStreamSink
from streamproc.types import Decision, FrameBatch

REDIS_SERVER = "/usr/bin/redis-server"
STREAM = "test:events"


def make_decision(
    track_id: int = 1, revision: int = 0, identity: str | None = "ada", gallery_version: str = "g1"
) -> Decision:
    return Decision(
        stream_id="cam",
        track_id=track_id,
        first_pts=0.0,
        last_pts=1.5,
        identity=identity,
        distance=0.42 if identity else float("nan"),
        n_frames=100,
        model_version="v1",
        gallery_version=gallery_version,
        revision=revision,
        embedding=np.ones(4, np.float32) / 2,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[redis.Redis]:
    """A throwaway redis-server on a free loopback port, data in tmp_path; stopped afterwards."""
    if shutil.which(REDIS_SERVER) is None:
        pytest.skip(f"{REDIS_SERVER} not installed")
    port = free_port()
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    args += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # redis-py's own retries off: the sink's injected Retry policy is the only one.
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=RedisRetry(NoBackoff(), 0))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def no_wait_retry(attempts: int, slept: list[float] | None = None) -> Retry:
    return Retry(ConstantBackoff(0.01), attempts=attempts, sleep=(slept if slept is not None else []).append)


def entries(client: redis.Redis) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(STREAM, "-", "+")
    ]


@pytest.mark.integration
def test_the_same_decision_twice_is_one_stream_entry(redis_server: redis.Redis) -> None:
    sink = RedisStreamSink(redis_server, STREAM, retry=no_wait_retry(3), dedupe_ttl_s=60)
    d = make_decision()
    assert len(sink.write([d])) == 1
    assert len(sink.write([d])) == 0
    restarted = RedisStreamSink(redis_server, STREAM, retry=no_wait_retry(3), dedupe_ttl_s=60)
    assert len(restarted.write([d, make_decision(revision=1)])) == 1  # only the update is new
    (first, second) = entries(redis_server)
    assert first["event_id"] == d.event_id and first["kind"] == "decision" and first["stream_id"] == "cam"
    assert json.loads(first["event"]) == d.to_event()
    assert json.loads(second["event"])["revision"] == 1
    assert 0 < redis_server.ttl(sink.dedupe_key(d.event_id)) <= 60


@pytest.mark.integration
def test_a_replayed_batch_goes_out_once_at_the_sinks(redis_server: redis.Redis, tmp_path: Path) -> None:
    """A restarted stream actor replays its file: the same decisions reach the emit stage again,
    and nothing upstream drops them. Every sink writes each event once, and ``write`` reports
    only the update that is new, so the run summary counts each decision once."""
    path = tmp_path / "events.jsonl"
    memory = MemorySink()
    sinks = [JsonLinesSink(path), RedisStreamSink(redis_server, STREAM, retry=no_wait_retry(3)), memory]
    stage = EmitStage(sinks)
    first = [make_decision(track_id=1), make_decision(track_id=2, identity=None)]
    assert stage.write(first) == first
    replay = [*first, make_decision(track_id=1, revision=1)]
    assert stage.write(replay) == replay[2:]
    stage.close()
    ids = [d.event_id for d in replay]
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == ids
    assert [e["event_id"] for e in entries(redis_server)] == ids
    assert [d.event_id for _, d in memory.seen] == ids
    assert stage.written == [3, 3, 3]


@pytest.mark.integration
def test_repeats_within_one_call_are_written_once(redis_server: redis.Redis) -> None:
    sink = RedisStreamSink(redis_server, STREAM, retry=no_wait_retry(3))
    batch = [make_decision(track_id=t) for t in (1, 2, 1, 3, 2)]
    assert len(sink.write(batch)) == 3
    assert [e["event_id"] for e in entries(redis_server)] == [
        make_decision(track_id=t).event_id for t in (1, 2, 3)
    ]


@pytest.mark.integration
def test_a_failed_xadd_leaves_no_dedupe_marker(redis_server: redis.Redis) -> None:
    redis_server.set(STREAM, "not a stream")
    sink = RedisStreamSink(redis_server, STREAM, retry=no_wait_retry(3))
    d = make_decision()
    with pytest.raises(GalleryError, match="refused"):
        sink.write([d])
    assert not redis_server.exists(sink.dedupe_key(d.event_id))
    redis_server.delete(STREAM)
    assert len(sink.write([d])) == 1  # the event was not lost


@pytest.mark.integration
def test_unreachable_redis_is_retried_then_gallery_unavailable(redis_server: redis.Redis) -> None:
    slept: list[float] = []
    sink = RedisStreamSink(redis_server, STREAM, retry=no_wait_retry(4, slept))
    assert len(sink.write([make_decision(track_id=1)])) == 1
    redis_server.shutdown(nosave=True)
    with pytest.raises(GalleryUnavailable, match="unreachable"):
        sink.write([make_decision(track_id=2)])
    assert len(slept) == 3  # 4 attempts, 3 waits


def test_json_lines_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    sink = JsonLinesSink(path)
    a, b = make_decision(track_id=1), make_decision(track_id=2, identity=None)
    assert len(sink.write([a, b, a])) == 2
    assert len(sink.write([b, make_decision(track_id=1, revision=1)])) == 1
    sink.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        a.to_event(),
        b.to_event(),
        make_decision(track_id=1, revision=1).to_event(),
    ]
    assert json.loads(lines[1])["known"] is False and json.loads(lines[1])["distance"] is None
    JsonLinesSink(path).write([make_decision(track_id=3)])  # append mode: earlier lines stay
    assert len(path.read_text().splitlines()) == 4


def test_json_lines_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonLinesSink("-")
    sink.write([make_decision()])
    sink.close()
    assert json.loads(capsys.readouterr().out) == make_decision().to_event()


def test_emit_stage_writes_only_matched_decisions(tmp_path: Path) -> None:
    stage = EmitStage.from_config(EmitConfig(jsonl_path=str(tmp_path / "e.jsonl")))
    matched, unmatched = make_decision(track_id=1), make_decision(track_id=2, gallery_version="")
    batch = FrameBatch("cam", np.zeros((1, 4, 4, 3), np.uint8), [0.0], decisions=[matched, unmatched])
    assert stage(batch) is batch
    stage(batch)
    stage.close()
    assert stage.written == [1]
    assert [json.loads(x)["track_id"] for x in (tmp_path / "e.jsonl").read_text().splitlines()] == [1]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (EmitConfig(redis_stream="events"), ConfigError),  # no client given
        (EmitConfig(jsonl_path="/proc/definitely/not/here.jsonl"), ConfigError),
    ],
)
def test_emit_config_errors(config: EmitConfig, error: type[Exception]) -> None:
    with pytest.raises(error):
        EmitStage.from_config(config)


@pytest.mark.integration
def test_emit_stage_from_config_with_redis(redis_server: redis.Redis) -> None:
    stage = EmitStage.from_config(EmitConfig(redis_stream=STREAM, dedupe_ttl_s=30), redis_client=redis_server)
    batch = FrameBatch("cam", np.zeros((1, 4, 4, 3), np.uint8), [0.0], decisions=[make_decision()])
    stage(batch)
    stage(batch)
    assert stage.written == [1] and len(entries(redis_server)) == 1
