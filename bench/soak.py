"""Soak: several looped synthetic streams on Ray for some minutes; is memory flat?

Each stream is the same synthetic video (faces cut from the celebrity *val* photos moving over a
plain background, ``streamproc.demo_video``) read as a live source (``live: true``: the file starts
over at its end) whose reader waits for the pipeline (``drop_policy: block``, so every frame is
processed and tracks fill up), with the demo's settings (``streamproc demo``: detect every 2nd
frame, decide after 3 faces, final after 8), so the whole pipeline runs the whole time: decode, MTCNN,
tracking, embedding, aggregation, matching against the *train* photos (an in-memory gallery). Nothing
is written anywhere.

The resident memory (RSS, psutil) of the driver and of every pipeline actor process (the processes
of the cluster this script starts titled ``ray::StreamActor`` / ``EmbedActor`` / ``DetectActor``) is printed once every actor is
up ("start"), every ``--interval`` seconds, and at the end, followed by each process's end/start
ratio (and end over the first interval's sample, which leaves out the warm-up).

    python bench/soak.py --minutes 3 --streams 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/pipeline_throughput.py

import numpy as np

try:
    import psutil
except ImportError:  # pragma: no cover - a dev dependency
    sys.exit("bench/soak.py needs psutil: pip install psutil")

from streamproc.commands.demo import VIDEO_OVERRIDES
from streamproc.config import load_config
from streamproc.demo_video import make_demo_video
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.index import GalleryIndex
from streamproc.models import fetch
from streamproc.runtime.pipeline import RayRunner

MB = 2**20
Sample = dict[str, float]  # process label -> RSS in MB


def build_inputs(folder: Path) -> tuple[Path, GalleryIndex]:
    """The synthetic video (two shots per person) and a gallery of each person's mean train embedding."""
    root = fetch.fetch("celebrity-5")
    pipeline = FacePipeline(load_config(None, ["embedder.threads=1"]))
    people = {p.name: sorted(p.iterdir())[:2] for p in sorted((root / "val").iterdir()) if p.is_dir()}
    video = folder / "soak.mp4"
    make_demo_video(pipeline.detector, people, video, read_image)
    names, rows = [], []
    for person in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        result = pipeline.embed_subjects([read_image(p) for p in sorted(person.iterdir())[:4]])
        mean = result.embeddings[~result.failed].mean(axis=0)
        names.append(person.name)
        rows.append(mean / np.linalg.norm(mean))
    index = GalleryIndex.from_arrays(names, names, np.stack(rows), model_version=pipeline.model_version)
    return video, index


ACTOR_CLASSES = ("StreamActor", "EmbedActor", "DetectActor")


def actor_processes() -> dict[str, psutil.Process]:
    """This script's pipeline actor processes (descendants titled ``ray::<Class>[.method]``),
    labelled ``<Class> <pid>``."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = (proc.cmdline() or [""])[0]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        name = title.removeprefix("ray::").split(".")[0].split(" ")[0]
        if title.startswith("ray::") and name in ACTOR_CLASSES:
            found[f"{name} {proc.pid}"] = proc
    return found


def sample(actors: dict[str, psutil.Process]) -> Sample:
    out = {"driver": psutil.Process().memory_info().rss / MB}
    for label, proc in sorted(actors.items()):
        try:
            out[label] = proc.memory_info().rss / MB
        except psutil.NoSuchProcess:
            out[label] = float("nan")
    out["total"] = sum(v for v in out.values() if v == v)
    return out


def show(t: float, s: Sample) -> None:
    print(f"t={t:5.0f}s  " + "  ".join(f"{k} {v:.0f} MB" for k, v in s.items()), flush=True)


def ratios(end: Sample, base: Sample) -> str:
    return "  ".join(f"{k} {end[k] / base[k]:.3f}" for k in end if k in base and base[k] > 0)


class Sampler(threading.Thread):
    """Waits for every actor, then samples every ``interval`` s for ``seconds``; stops the run after."""

    def __init__(self, runner: RayRunner, n_actors: int, seconds: float, interval: float) -> None:
        super().__init__(daemon=True)
        self.runner, self.n_actors, self.seconds, self.interval = runner, n_actors, seconds, interval
        self.samples: list[tuple[float, Sample]] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.runner.stop()

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while len(actors := actor_processes()) < self.n_actors:
            if time.monotonic() > deadline:
                self.error = f"only {len(actors)} of {self.n_actors} actor processes came up in 300 s"
                return
            time.sleep(1.0)
        time.sleep(2.0)  # let the first batches through: every model is loaded and in use
        t0 = time.monotonic()
        while True:
            t = time.monotonic() - t0
            self.samples.append((t, sample(actors)))
            show(t, self.samples[-1][1])
            if t >= self.seconds - 0.5:
                return
            time.sleep(
                max(0.0, min(self.interval * len(self.samples), self.seconds) - (time.monotonic() - t0))
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to run after start-up")
    parser.add_argument("--streams", type=int, default=3, help="looped synthetic streams")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        video, index = build_inputs(Path(tmp))
        sources = [
            {"uri": str(video), "stream_id": f"soak{i}", "live": True, "drop_policy": "block"}
            for i in range(args.streams)
        ]
        config = load_config(None, ["sources=" + json.dumps(sources), "embedder.threads=1", *VIDEO_OVERRIDES])
        runner = RayRunner(config, index=index)
        sampler = Sampler(runner, args.streams + config.runtime.embedders, args.minutes * 60, args.interval)
        print(
            f"soak: {args.streams} looped streams of {video.name}, {args.minutes:g} min, RSS every "
            f"{args.interval:g} s",
            flush=True,
        )
        sampler.start()
        summary = runner.run()
        sampler.join(30)

    if sampler.error is not None or len(sampler.samples) < 2:
        print(f"soak: no result: {sampler.error or 'fewer than two samples'}")
        return 1
    (_, start), (_, end) = sampler.samples[0], sampler.samples[-1]
    print(f"end/start: {ratios(end, start)}")
    if len(sampler.samples) > 2:
        print(f"end/t={sampler.samples[1][0]:.0f}s: {ratios(end, sampler.samples[1][1])}")
    for s in summary.streams.values():
        print(
            f"{s.stream_id}: {s.frames} frames ({s.fps:.1f}/s), {s.decisions} decisions, dropped {s.dropped}, "
            f"{'ok' if s.error is None else s.error}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"samples": sampler.samples, "ok": summary.ok}, indent=2))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
