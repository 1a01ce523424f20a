"""A stream actor killed mid-run (``ray.kill(no_restart=False)``): Ray restarts it, its file starts
over, and no event goes out twice.

The run's only stream actor is killed when the first events reach the sinks. ``runtime.max_restarts=1``
lets Ray restart it once. The expected outcome: the stream ends normally, every person shown is
named, and every event id is written once by every sink (the sinks are where the replayed file's
repeats are dropped: nothing upstream drops them). The time from the kill to the restarted actor
answering is printed and attached as a property.

The same kill on a live RTSP source (the demo video looped by the real GStreamer server): the stream
goes on, and the tracks after the restart are numbered on from those before it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from streamproc.runtime import pipeline
from streamproc.runtime.driver import Loop
from streamproc.runtime.pipeline import RayRunner
from streamproc.stages.emit import JsonLinesSink, MemorySink
from streamproc.types import Decision

pytestmark = pytest.mark.integration
MakeConfig = Callable[..., Any]
RUN_LIMIT_S = 120.0
LIVE_RUN_S = 25.0  # the demo video loops on the RTSP server about 5 times


class KillOnFirstWrite(MemorySink):
    """A ``MemorySink`` that kills the stream actor after its first write and times how long a new process takes to answer in its place."""

    def __init__(self, loops: list[Loop], stream_id: str) -> None:
        super().__init__()
        self.loops, self.stream_id = loops, stream_id
        self.killed_at: float | None = None
        self.back_at: float | None = None
        self.killed_pid = 0
        self.run_over = threading.Event()
        self.watcher = threading.Thread(target=self._wait_back, daemon=True)

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        written = super()._write(decisions)
        if self.killed_at is None:
            self.killed_pid = self._pid(timeout=30)
            ray.kill(self._actor(), no_restart=False)
            self.killed_at = time.monotonic()
            self.watcher.start()
        return written

    def _actor(self) -> Any:
        return self.loops[0].streams[self.stream_id].actor

    def _pid(self, timeout: float) -> int:
        return int(ray.get(self._actor().__ray_call__.remote(lambda _self: os.getpid()), timeout=timeout))

    def _wait_back(self) -> None:
        """Until another process answers: the killed one may still answer before it is gone."""
        while not self.run_over.is_set():
            try:
                pid = self._pid(timeout=5)
            except ActorDiedError:
                return  # for good: Ray gave up on it, or the runner killed it at its end
            except (RayActorError, GetTimeoutError):
                pid = self.killed_pid
            if pid != self.killed_pid:
                self.back_at = time.monotonic()
                return
            time.sleep(0.05)


def spy_on_loops(monkeypatch: pytest.MonkeyPatch) -> list[Loop]:
    """The run's driver loops, to reach its stream actors."""
    loops: list[Loop] = []

    class Spy(Loop):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            loops.append(self)

    monkeypatch.setattr(pipeline, "Loop", Spy)
    return loops


def test_stream_actor_killed_mid_run(
    ray_cluster: None,
    make_config: MakeConfig,
    demo_video: Path,
    demo_people: set[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    sink = KillOnFirstWrite(spy_on_loops(monkeypatch), "demo")
    jsonl = JsonLinesSink(tmp_path / "events.jsonl")
    config = make_config([{"uri": str(demo_video)}], "runtime.max_restarts=1")
    started = time.monotonic()
    summary = RayRunner(config, sinks=[sink, jsonl]).run(duration_s=RUN_LIMIT_S)
    wall = time.monotonic() - started
    jsonl.close()
    sink.run_over.set()
    if sink.watcher.is_alive():
        sink.watcher.join(10)

    assert sink.killed_at is not None, "no event reached the sinks: nothing was killed"
    repeats = {k: n for k, n in Counter(d.event_id for _, d in sink.seen).items() if n > 1}
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    file_ids = [json.loads(line)["event_id"] for line in lines]
    stream = summary.streams["demo"]
    restart_s = None if sink.back_at is None else round(sink.back_at - sink.killed_at, 2)
    print(
        f"\nstream actor killed {sink.killed_at - started:.1f}s into the run; restarted actor answered "
        f"after {restart_s}s; run {wall:.1f}s, error={stream.error}; frames {stream.frames}; "
        f"decisions {len(summary.decisions)}; written by the recording sink {len(sink.seen)} "
        f"({len(repeats)} ids more than once); events.jsonl {len(file_ids)} lines "
        f"({len(file_ids) - len(set(file_ids))} repeated)"
    )
    record_property("stream_actor_restart_s", restart_s)

    assert summary.ok, summary.streams
    assert wall < RUN_LIMIT_S - 5, "the run only ended at its time limit"
    assert {d.identity for d in summary.decisions if d.identity} == demo_people
    assert len(file_ids) == len(set(file_ids)) == len(summary.decisions)
    assert not repeats, f"event ids written by a sink more than once: {repeats}"


def test_live_stream_actor_killed_goes_on_with_new_track_ids(
    ray_cluster: None,
    make_config: MakeConfig,
    rtsp_server: Callable[..., Any],
    demo_video: Path,
    demo_people: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A camera does not start over: after the restart its new faces are new tracks, numbered on
    from the last id the driver saw, so none takes the event id of a decision already out."""
    server = rtsp_server(demo_video, loop=True)
    sink = KillOnFirstWrite(spy_on_loops(monkeypatch), "cam")
    config = make_config([{"uri": server.url, "stream_id": "cam"}], "runtime.max_restarts=1")
    summary = RayRunner(config, sinks=[sink]).run(duration_s=LIVE_RUN_S)
    sink.run_over.set()
    if sink.watcher.is_alive():
        sink.watcher.join(10)

    assert sink.killed_at is not None and sink.back_at is not None, "the actor was not killed and back"
    before = [d for t, d in sink.seen if t <= sink.killed_at]
    after = [d for t, d in sink.seen if t > sink.back_at]
    ids = [d.event_id for _, d in sink.seen]
    print(
        f"\nlive stream actor killed; back after {sink.back_at - sink.killed_at:.2f}s; decisions before "
        f"{len(before)} (tracks {sorted({d.track_id for d in before})}), after {len(after)} (tracks "
        f"{sorted({d.track_id for d in after})}); {len(ids) - len(set(ids))} event ids repeated"
    )
    assert summary.ok, summary.streams
    assert after, "nothing was decided after the restart"
    assert min(d.track_id for d in after) > max(d.track_id for d in before)
    assert len(ids) == len(set(ids))
    assert {d.identity for d in after if d.identity} <= demo_people
