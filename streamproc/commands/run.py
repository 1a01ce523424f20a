"""``streamproc run``: recognise faces in video files and live streams.

    streamproc run --source lobby.mp4 --source rtsp://cam1:8554/stream --runner ray --events events.jsonl

The configuration is validated (and the sources checked) before anything starts. Every decision
prints one line (stream, track, identity or unknown, distance, faces aggregated, model version);
a summary per stream follows at the end. ``--events`` appends the JSON events to a file (``-`` =
standard output; the human lines then go to standard error). ``--annotate DIR`` writes each video
again with its faces boxed and labelled (``streamproc.annotate``; video files only). A source that
fails is reported and the others keep running; the exit code is 1 when any source failed, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from typing import IO

from streamproc.annotate import Annotator
from streamproc.commands.common import add_config_args, config_from_args
from streamproc.config import Config
from streamproc.metrics import PrometheusRecorder
from streamproc.runtime.chain import RunSummary, check_sources
from streamproc.stages.emit import Sink
from streamproc.types import Decision


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="recognise faces in video files and RTSP streams")
    p.add_argument(
        "--source",
        action="append",
        metavar="URI",
        help="video file or rtsp:// URL; repeat for several streams (replaces the config's sources)",
    )
    p.add_argument(
        "--runner", choices=["ray", "local"], help="Ray actors or one process (default: runtime.runner)"
    )
    p.add_argument(
        "--events", metavar="PATH", help="append JSON events to PATH ('-' = stdout; default: emit.jsonl_path)"
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (live streams never end)"
    )
    p.add_argument(
        "--annotate",
        metavar="DIR",
        help="after the run, write DIR/<stream_id>.mp4: each video with face boxes, track ids, names "
        "and distances drawn (video files only)",
    )
    add_config_args(p)
    p.set_defaults(handler=_run)


def format_decision(d: Decision) -> str:
    """One human line per decision.

    >>> format_decision(Decision("cam", 3, 0.0, 1.0, "Ada", 0.4123, 12, "v1", "v1"))
    'cam  track 3  Ada  d=0.412  faces 12  model v1  t=0.00-1.00s'
    """
    who = d.identity if d.identity is not None else "unknown"
    dist = "d=n/a" if not math.isfinite(d.distance) else f"d={d.distance:.3f}"
    update = "  (update)" if d.revision > 0 else ""
    return (
        f"{d.stream_id}  track {d.track_id}  {who}  {dist}  faces {d.n_frames}  model {d.model_version}  "
        f"t={d.first_pts:.2f}-{d.last_pts:.2f}s{update}"
    )


class PrintSink(Sink):
    """Writes ``format_decision`` lines as decisions come out of the pipeline."""

    name = "print"

    def __init__(self, out: IO[str]):
        self.out = out

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        for d in decisions:
            print(format_decision(d), file=self.out, flush=True)
        return decisions


def print_summary(summary: RunSummary, out: IO[str]) -> None:
    print(
        f"{summary.runner} runner: {len(summary.decisions)} decisions from {summary.frames} frames "
        f"in {summary.wall_s:.1f}s ({summary.fps:.1f} frames/s)",
        file=out,
    )
    for s in summary.streams.values():
        state = "ok" if s.error is None else f"FAILED: {s.error}"
        print(
            f"  {s.stream_id}: frames {s.frames}, faces {s.faces}, tracks {s.tracks}, decisions {s.decisions}, "
            f"reconnects {s.reconnects}, dropped {s.dropped}, {s.fps:.1f} frames/s  {state}",
            file=out,
        )


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.source:
        overrides.append("sources=" + json.dumps([{"uri": uri} for uri in args.source]))
    if args.runner:
        overrides.append(f"runtime.runner={args.runner}")
    if args.events:
        overrides.append("emit.jsonl_path=" + json.dumps(args.events))
    config = config_from_args(args, overrides)
    check_sources(config.sources)
    annotator = None
    if args.annotate:
        annotator = Annotator(args.annotate, config.sources, hold_frames=config.detect.every_k_frames)
    out = sys.stderr if config.emit.jsonl_path == "-" else sys.stdout
    recorder = PrometheusRecorder()
    server = None
    if config.metrics.port is not None:
        server = recorder.serve(config.metrics.port, config.metrics.addr)
        print(f"metrics: {server.url}", file=sys.stderr)
    try:
        return _run_with(config, args.duration, out, recorder, annotator)
    finally:
        if server is not None:
            server.close()  # the port is free again when the command returns


def _run_with(
    config: Config,
    duration: float | None,
    out: IO[str],
    recorder: PrometheusRecorder,
    annotator: Annotator | None,
) -> int:
    from streamproc.runtime.local import LocalRunner
    from streamproc.runtime.pipeline import RayRunner

    sinks = [PrintSink(out)]
    runner: LocalRunner | RayRunner
    if config.runtime.runner == "local":
        runner = LocalRunner(config, sinks=sinks, recorder=recorder, annotator=annotator)
    else:
        runner = RayRunner(config, sinks=sinks, recorder=recorder, annotator=annotator)
    # SIGTERM (how Kubernetes and systemd stop a process) ends the run like Ctrl-C: open tracks
    # are decided and emitted before exit.
    previous = signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    # Python keeps SIGINT ignored when it started ignored (a job started with `&` from a script):
    # Ctrl-C and `kill -INT` must still stop a run.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    print(
        f"running {len(config.sources)} source(s) on the {runner.name} runner; "
        "Ctrl-C or SIGTERM stops after deciding open tracks",
        file=sys.stderr,
        flush=True,
    )
    try:
        summary = runner.run(duration_s=duration)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    print_summary(summary, out)
    if annotator is not None:
        written = annotator.write({sid: s.frames for sid, s in summary.streams.items()})
        for video in written.values():
            print(f"annotated {video.stream_id}: {video.path} ({video.frames} frames)", file=out)
    return 0 if summary.ok else 1
