"""Pipeline throughput: decode-only ceiling, a naive per-frame loop, and our pipeline local and on Ray.

Videos:

* ``street-multiface-1080p.mp4`` from the shared data (``STREAMPROC_SHARED_DATA``; skipped with a
  message when absent): 1920x1080, 25 fps, 105 frames, 1-6 faces a frame, nobody enrolled;
* ``synth-640x480``: made here, 30 fps, faces cut from the five celebrities' *val* images moving
  through three lanes over a plain background, a new person every 2 s per lane (the *train*
  images are the gallery).

Methods, all with the same models (MTCNN, FaceNet Inception-ResNet-v1) and the same gallery:

* ``decode_only``: ``VideoSource`` iteration, nothing else (the ceiling);
* ``naive``: one loop, every frame: detect, align and embed every face, identify every face. Its
  per-track decisions come from grouping the faces with the same tracker and taking each
  track's majority identity;
* ``ours_local``: ``LocalRunner`` with the default config (detect every 5th frame, track, embed a
  track's faces up to 100, one decision per track, match per track);
* ``ours_ray``: ``RayRunner``, same config, on a local Ray cluster of all this machine's CPUs
  (default placement: MTCNN in the stream actor, one embedding actor);
* ``ours_ray_pool``: the same with a pool of detector actors (``runtime.detectors`` = CPUs, half a
  CPU each, half a CPU for the embedder and for the stream actor), which detects the batches of a
  single stream in parallel;
* ``ours_ray_realtime``: ``RayRunner`` with the real-time profile ``configs/realtime.yaml``
  (detection on every 10th frame, on a copy at most 640 px wide for faces from 40 px,
  MobileFaceNet, 5 faces embedded a track), against a gallery enrolled with the same profile.

``ceiling`` (the 1080p video only): the core time a frame costs each method on one thread (the
naive loop, and ``LocalRunner`` with the default config), and what that allows:
``ratio_ceiling_ray_vs_naive`` = (frames/s that all the machine's cores could give ours if they did
nothing but its one-thread work) / the naive loop's frames/s. Ray cannot beat it: a ratio above it
needs less work per frame, not better scheduling.

frames/s = frames / wall time of the processing (models loaded before the clock starts, Ray
actors started before it too). ``realtime_streams_640x480``: the largest N for which N copies of
the 640x480 30-fps video run at once on Ray with every stream at >= 30 frames/s (default config);
``realtime_streams_640x480_realtime``: the same with the real-time profile.

    python bench/pipeline_throughput.py --json out/pipeline_throughput.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# torch's OpenMP threads spin while they wait; on a machine shared with other work that costs 10-30x
# (measured here with 2 threads on 2 busy cores). Passive waiting is as fast on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from streamproc import env
from streamproc.align import align_faces
from streamproc.config import Config, load_config
from streamproc.demo_video import face_sprite
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.index import GalleryIndex
from streamproc.models import fetch
from streamproc.runtime.chain import RunSummary
from streamproc.runtime.local import LocalRunner
from streamproc.sources import SourceConfig, VideoSource
from streamproc.sources.synth import write_video
from streamproc.stages.config import AggregateConfig, DetectStageConfig
from streamproc.stages.track import TrackStage
from streamproc.types import FrameBatch

SYNTH_W, SYNTH_H, SYNTH_FPS, SPRITE = 640, 480, 30, 128
REALTIME_PROFILE = Path(__file__).resolve().parents[1] / "configs" / "realtime.yaml"
REALTIME_FPS = 30.0


# --- inputs ---------------------------------------------------------------------------------------
def enroll(pipeline: FacePipeline, root: Path) -> GalleryIndex:
    """One mean embedding per person from their train images."""
    names, rows = [], []
    for person in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        images = [read_image(p) for p in sorted(person.iterdir())]
        result = pipeline.embed_subjects(images)
        mean = result.embeddings[~result.failed].mean(axis=0)
        names.append(person.name)
        rows.append(mean / np.linalg.norm(mean))
    return GalleryIndex.from_arrays(names, names, np.stack(rows), model_version=pipeline.model_version)


def sprite(pipeline: FacePipeline, image: np.ndarray) -> np.ndarray:
    return face_sprite(pipeline.detector, image, SPRITE)


def synth_video(pipeline: FacePipeline, root: Path, path: Path, seconds: float) -> tuple[Path, set[str]]:
    """Three lanes of faces moving right; each lane shows the next person every 2 s."""
    people = sorted(p.name for p in (root / "val").iterdir() if p.is_dir())
    sprites = {p: sprite(pipeline, read_image(sorted((root / "val" / p).iterdir())[0])) for p in people}
    background = np.full((SYNTH_H, SYNTH_W, 3), 80, np.uint8)
    background[:, :, 2] = np.linspace(40, 170, SYNTH_W).astype(np.uint8)[None, :]
    segment = 2 * SYNTH_FPS
    frames, shown = [], set()
    for i in range(int(seconds * SYNTH_FPS)):
        frame = background.copy()
        for lane in range(3):
            k = (i + lane * segment // 3) // segment  # lanes change person at staggered times
            person = people[(k * 3 + lane) % len(people)]
            x = 10 + ((i + lane * segment // 3) % segment) * 4
            y = 16 + lane * 152
            frame[y : y + SPRITE, x : x + SPRITE] = sprites[person]
            shown.add(person)
        frames.append(frame)
    return write_video(path, frames, SYNTH_FPS), shown


# --- methods --------------------------------------------------------------------------------------
def decode_only(path: Path) -> dict[str, Any]:
    started, frames = time.perf_counter(), 0
    with VideoSource(SourceConfig(uri=str(path))) as source:
        for batch in source:
            frames += len(batch)
    wall = time.perf_counter() - started
    return {"frames": frames, "wall_s": wall, "fps": frames / wall}


def naive(pipeline: FacePipeline, index: GalleryIndex, threshold: float, path: Path) -> dict[str, Any]:
    """Every frame: detect, embed every face, identify every face; tracks only group the answers."""
    tracker = TrackStage(
        load_config(None).track,
        detect=DetectStageConfig(every_k_frames=1),
        aggregate=AggregateConfig(n_frames=10**9, min_frames=1),
    )
    votes: dict[int, Counter[str]] = {}
    span: dict[int, list[float]] = {}
    started, frames = time.perf_counter(), 0
    with VideoSource(SourceConfig(uri=str(path), batch_frames=1)) as source:
        for batch in source:
            frame = batch.frames[0]
            faces = pipeline.detector([frame])[0]
            names: list[str] = []
            if len(faces):
                embeddings = pipeline.embedder(align_faces(frame, faces, pipeline.config.align))
                names = [
                    m.name if m else "unknown"
                    for m in index.identify(
                        embeddings, threshold=threshold, margin=pipeline.config.gallery.margin
                    )
                ]
            tracked = tracker(
                FrameBatch(
                    batch.stream_id, batch.frames, batch.pts, faces=faces, end_of_stream=batch.end_of_stream
                )
            )
            for tid, name in zip(np.asarray(tracked.faces.track_id).tolist(), names, strict=True):
                if tid >= 0:
                    votes.setdefault(tid, Counter())[name] += 1
                    span.setdefault(tid, [float(batch.pts[0]), float(batch.pts[0])])[1] = float(batch.pts[0])
            frames += 1
    wall = time.perf_counter() - started
    tracks = [
        {
            "track": tid,
            "t": [round(a, 2), round(b, 2)],
            "identity": v.most_common(1)[0][0],
            "faces": sum(v.values()),
        }
        for tid, v in sorted(votes.items())
        for a, b in [span[tid]]
    ]
    return {"frames": frames, "wall_s": wall, "fps": frames / wall, "tracks": tracks}


def work_per_frame(
    pipeline: FacePipeline, index: GalleryIndex, threshold: float, path: Path, naive_fps: float
) -> dict[str, Any]:
    """Core time per frame (process CPU time: torch, OpenCV and the decoder's threads) of the naive
    loop and of ours, each on one torch/OpenCV thread, and the ratio to the naive loop that the
    machine's cores could reach at most."""
    import cv2
    import torch

    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        started = time.process_time()
        frames = naive(pipeline, index, threshold, path)["frames"]
        naive_ms = (time.process_time() - started) * 1e3 / frames
        runner = LocalRunner(
            pipeline_config([path]), index=index, detector=pipeline.detector, embedder=pipeline.embedder
        )
        started = time.process_time()
        frames = runner.run().frames
        ours_ms = (time.process_time() - started) * 1e3 / frames
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    cpus = os.cpu_count() or 1
    return {
        "cpu_ms_per_frame_naive": naive_ms,
        "cpu_ms_per_frame_ours": ours_ms,
        "work_ratio_naive_vs_ours": naive_ms / ours_ms,
        "ratio_ceiling_ray_vs_naive": cpus * 1e3 / ours_ms / naive_fps,
    }


def ours(summary: RunSummary) -> dict[str, Any]:
    final: dict[tuple[str, int], Any] = {}
    for d in summary.decisions:  # the last kept revision of each track is its answer
        final[(d.stream_id, d.track_id)] = d
    tracks = [
        {
            "track": tid,
            "t": [round(d.first_pts, 2), round(d.last_pts, 2)],
            "identity": d.identity or "unknown",
            "faces": d.n_frames,
            "distance": None if not np.isfinite(d.distance) else round(d.distance, 3),
        }
        for (_, tid), d in sorted(final.items())
    ]
    return {"frames": summary.frames, "wall_s": summary.wall_s, "fps": summary.fps, "tracks": tracks}


OURS_SET: list[str] = []  # --set: overrides of the default config for our runs (not the naive loop's)


def pipeline_config(paths: Sequence[Path], *extra: str, profile: Path | None = None) -> Config:
    sources = [{"uri": str(p), "stream_id": f"{p.stem}-{i}"} for i, p in enumerate(paths)]
    ours = [] if profile else OURS_SET
    return load_config(profile, ["sources=" + json.dumps(sources), *ours, *extra])


def pool_settings() -> list[str]:
    """A detector pool sized to this machine: one detector actor per CPU, half a CPU each."""
    cpus = os.cpu_count() or 1
    return [
        f"runtime.detectors={cpus}",
        "runtime.detector_cpus=0.5",
        "runtime.embedder_cpus=0.5",
        "runtime.stream_cpus=0.5",
    ]


def run_ray(config: Config, index: GalleryIndex) -> RunSummary:
    from streamproc.runtime.pipeline import RayRunner

    return RayRunner(config, index=index).run()


# --- report ---------------------------------------------------------------------------------------
def identity_counts(tracks: list[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(t["identity"] for t in tracks).items()))


def compare_with_naive(
    ours: list[dict[str, Any]], naive: list[dict[str, Any]], profile: Path | None = None
) -> dict[str, Any]:
    """Decisions carry no boxes, so tracks are paired by time overlap and identity.

    ``agree``: our decisions for which a naive track overlapping in time has the same majority
    identity. ``missed``: naive tracks of a known person long enough for our pipeline to decide
    (``min_frames`` detections at every ``every_k_frames``-th frame) with no overlapping decision of
    ours naming that person.
    """
    config = load_config(profile, [] if profile else OURS_SET)
    long_faces = config.aggregate.min_frames * config.detect.every_k_frames

    def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return bool(a["t"][0] <= b["t"][1] and b["t"][0] <= a["t"][1])

    agree = sum(any(overlap(o, n) and n["identity"] == o["identity"] for n in naive) for o in ours)
    long_known = [n for n in naive if n["identity"] != "unknown" and n["faces"] >= long_faces]
    missed = [
        n for n in long_known if not any(overlap(n, o) and o["identity"] == n["identity"] for o in ours)
    ]
    return {
        "ours": len(ours),
        "agree": agree,
        "long_faces": long_faces,
        "naive_long_known": len(long_known),
        "missed": len(missed),
        "naive_identities": sorted({n["identity"] for n in naive}),
        "ours_identities": sorted({o["identity"] for o in ours}),
    }


def decisions(result: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The decisions without their track ids: the id the appearance guard gives a split track is the
    tracker's next id when the embeddings come back, and the tracker may be ahead by a different
    number of batches on each runner."""
    return sorted((tuple(t["t"]), t["identity"], t["faces"], t.get("distance")) for t in result["tracks"])


def print_tracks(method: str, result: dict[str, Any]) -> None:
    print(f"    {method}: {len(result['tracks'])} tracks, identities {identity_counts(result['tracks'])}")
    for t in result["tracks"]:
        dist = f" d={t['distance']}" if t.get("distance") is not None else ""
        print(
            f"      track {t['track']:>3}  t={t['t'][0]:>6.2f}-{t['t'][1]:<6.2f} {t['identity']:<16} faces {t['faces']}{dist}"
        )


def bench_video(
    name: str,
    path: Path,
    pipeline: FacePipeline,
    index: GalleryIndex,
    realtime_index: GalleryIndex,
    ceiling: bool = False,
) -> dict[str, Any]:
    threshold = pipeline.embedder.card.threshold_for(pipeline.model_version)
    print(f"\n== {name}: {path.name}", flush=True)
    out: dict[str, Any] = {"decode_only": decode_only(path)}
    print(f"  decode only      {out['decode_only']['fps']:8.1f} frames/s", flush=True)
    out["naive"] = naive(pipeline, index, threshold, path)
    print(f"  naive loop       {out['naive']['fps']:8.1f} frames/s", flush=True)
    runner = LocalRunner(
        pipeline_config([path]), index=index, detector=pipeline.detector, embedder=pipeline.embedder
    )
    out["ours_local"] = ours(runner.run())
    print(f"  ours, local      {out['ours_local']['fps']:8.1f} frames/s", flush=True)
    out["ours_ray"] = ours(run_ray(pipeline_config([path]), index))
    print(f"  ours, ray        {out['ours_ray']['fps']:8.1f} frames/s", flush=True)
    out["ours_ray_pool"] = ours(run_ray(pipeline_config([path], *pool_settings()), index))
    print(f"  ours, ray + detector pool {out['ours_ray_pool']['fps']:8.1f} frames/s", flush=True)
    out["ours_ray_realtime"] = ours(
        run_ray(pipeline_config([path], profile=REALTIME_PROFILE), realtime_index)
    )
    print(f"  ours, ray, real-time profile {out['ours_ray_realtime']['fps']:8.1f} frames/s", flush=True)
    out["ratio_ray_vs_naive"] = out["ours_ray"]["fps"] / out["naive"]["fps"]
    out["ratio_ray_pool_vs_naive"] = out["ours_ray_pool"]["fps"] / out["naive"]["fps"]
    out["ratio_local_vs_naive"] = out["ours_local"]["fps"] / out["naive"]["fps"]
    out["ratio_ray_realtime_vs_naive"] = out["ours_ray_realtime"]["fps"] / out["naive"]["fps"]
    if ceiling:
        out["ceiling"] = c = work_per_frame(pipeline, index, threshold, path, out["naive"]["fps"])
        print(
            f"  one thread: naive {c['cpu_ms_per_frame_naive']:.1f} ms of core time a frame, ours "
            f"{c['cpu_ms_per_frame_ours']:.1f} (work ratio {c['work_ratio_naive_vs_ours']:.2f}x); "
            f"ceiling for ray / naive on {os.cpu_count()} cores {c['ratio_ceiling_ray_vs_naive']:.2f}x",
            flush=True,
        )
    print(
        f"  ray / naive      {out['ratio_ray_vs_naive']:8.2f}x   (ray + pool / naive {out['ratio_ray_pool_vs_naive']:.2f}x, "
        f"local / naive {out['ratio_local_vs_naive']:.2f}x, real-time profile / naive "
        f"{out['ratio_ray_realtime_vs_naive']:.2f}x)"
    )
    print("  per-track decisions:")
    for method in ("naive", "ours_local", "ours_ray", "ours_ray_pool", "ours_ray_realtime"):
        print_tracks(method, out[method])
    same = decisions(out["ours_local"]) == decisions(out["ours_ray"]) == decisions(out["ours_ray_pool"])
    out["same_decisions_local_ray"] = same
    out["vs_naive"] = compare_with_naive(out["ours_ray"]["tracks"], out["naive"]["tracks"])
    out["realtime_vs_naive"] = compare_with_naive(
        out["ours_ray_realtime"]["tracks"], out["naive"]["tracks"], REALTIME_PROFILE
    )
    print(f"  local, ray and ray + pool: identical per-track decisions (track ids aside): {same}")
    print_agreement("ray", out["vs_naive"])
    print_agreement("real-time profile", out["realtime_vs_naive"])
    return out


def print_agreement(method: str, v: dict[str, Any]) -> None:
    print(
        f"  {method} vs naive: {v['agree']}/{v['ours']} of our decisions name who the naive loop names at that time; "
        f"naive tracks with a known person and >= {v['long_faces']} faces: {v['naive_long_known']}, "
        f"missed by ours: {v['missed']}; identities naive {v['naive_identities']} vs ours {v['ours_identities']}"
    )


def realtime_streams(
    path: Path, index: GalleryIndex, max_streams: int, profile: Path | None = None
) -> tuple[int, list[dict[str, Any]]]:
    print(
        f"\n== real time ({profile.name if profile else 'default config'}): N copies of {path.name} at once "
        f"on Ray, each needs >= {REALTIME_FPS:g} frames/s",
        flush=True,
    )
    best, trials = 0, []
    for n in range(1, max_streams + 1):
        summary = run_ray(pipeline_config([path] * n, profile=profile), index)
        per_stream = [s.fps for s in summary.streams.values()]
        ok = summary.ok and min(per_stream) >= REALTIME_FPS
        trials.append(
            {
                "streams": n,
                "per_stream_fps": [round(f, 1) for f in per_stream],
                "total_fps": summary.fps,
                "realtime": ok,
            }
        )
        print(
            f"  N={n}: per stream {', '.join(f'{f:.1f}' for f in per_stream)} frames/s, total {summary.fps:.1f}  {'ok' if ok else 'too slow'}",
            flush=True,
        )
        if not ok:
            break
        best = n
    return best, trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--synth-seconds", type=float, default=6.0, help="length of the 640x480 test video")
    parser.add_argument(
        "--max-streams", type=int, default=8, help="most copies tried for the real-time count"
    )
    parser.add_argument("--keep", action="store_true", help="keep the synthetic video (default: deleted)")
    parser.add_argument(
        "--only-realtime",
        action="store_true",
        help="only the real-time profile: its run on each video and its real-time stream count",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the default config for our runs; the naive loop and the profile keep theirs "
        "(e.g. detect.every_k_frames=10)",
    )
    args = parser.parse_args(argv)
    OURS_SET[:] = args.set
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import ray
    import torch

    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=512 * 2**20, log_to_driver=False)
    config = load_config(None)
    pipeline = FacePipeline(config)
    root = fetch.celebrity_dataset()
    index = enroll(pipeline, root)
    realtime_index = enroll(FacePipeline(load_config(REALTIME_PROFILE)), root)
    load = os.getloadavg()[0]
    print(
        f"machine: {cpus} CPUs, load average {load:.2f} at start, torch {torch.__version__}, "
        f"ray {ray.__version__}; gallery {len(index)} people"
        + (f"; ours with {' '.join(args.set)}" if args.set else "")
    )

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    synth, people = synth_video(pipeline, root, work / "synth-640x480.mp4", args.synth_seconds)
    print(f"synthetic video: {synth} ({args.synth_seconds:g}s, people shown: {', '.join(sorted(people))})")
    videos: dict[str, Path] = {}
    street = env.shared_data() / "video" / "street-multiface-1080p.mp4"
    if street.is_file():
        videos["street-1080p"] = street
    else:
        print(f"skipping the 1080p street video: {street} not found (set STREAMPROC_SHARED_DATA)")
    videos["synth-640x480"] = synth

    if args.only_realtime:
        for name, path in videos.items():
            summary = ours(run_ray(pipeline_config([path], profile=REALTIME_PROFILE), realtime_index))
            print(f"\n== {name}: real-time profile on ray {summary['fps']:8.1f} frames/s")
            print_tracks("ours_ray_realtime", summary)
        realtime_streams(synth, realtime_index, args.max_streams, REALTIME_PROFILE)
        ray.shutdown()
        return 0
    results = {
        name: bench_video(name, path, pipeline, index, realtime_index, ceiling=name == "street-1080p")
        for name, path in videos.items()
    }
    n_realtime, trials = realtime_streams(synth, index, args.max_streams)
    n_profile, profile_trials = realtime_streams(synth, realtime_index, args.max_streams, REALTIME_PROFILE)
    ray.shutdown()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    primary = results.get("street-1080p", results["synth-640x480"])
    report = {
        "primary_video": "street-1080p" if "street-1080p" in results else "synth-640x480",
        "ours_set": args.set,
        "fps_decode_only": primary["decode_only"]["fps"],
        "fps_naive": primary["naive"]["fps"],
        "fps_ours_local": primary["ours_local"]["fps"],
        "fps_ours_ray": primary["ours_ray"]["fps"],
        "fps_ours_ray_detector_pool": primary["ours_ray_pool"]["fps"],
        "ratio_ray_vs_naive": primary["ratio_ray_vs_naive"],
        "ratio_ray_detector_pool_vs_naive": primary["ratio_ray_pool_vs_naive"],
        "fps_ours_ray_realtime": primary["ours_ray_realtime"]["fps"],
        "ratio_ray_realtime_vs_naive": primary["ratio_ray_realtime_vs_naive"],
        **primary.get("ceiling", {}),
        "realtime_streams_640x480": n_realtime,
        "realtime_trials": trials,
        "realtime_streams_640x480_realtime": n_profile,
        "realtime_trials_realtime": profile_trials,
        "machine": {
            "cpus": cpus,
            "load_average_at_start": load,
            "torch": torch.__version__,
            "ray": ray.__version__,
        },
        "videos": results,
    }
    print("\n== summary (primary video: " + report["primary_video"] + ")")
    for key in (
        "fps_decode_only",
        "fps_naive",
        "fps_ours_local",
        "fps_ours_ray",
        "fps_ours_ray_detector_pool",
        "ratio_ray_vs_naive",
        "ratio_ray_detector_pool_vs_naive",
        "fps_ours_ray_realtime",
        "ratio_ray_realtime_vs_naive",
        "cpu_ms_per_frame_naive",
        "cpu_ms_per_frame_ours",
        "work_ratio_naive_vs_ours",
        "ratio_ceiling_ray_vs_naive",
    ):
        if key in report:
            print(f"  {key:<34} {report[key]:8.2f}")
    print(f"  {'realtime_streams_640x480':<34} {n_realtime:8d}")
    print(f"  {'realtime_streams_640x480_realtime':<34} {n_profile:8d}")
    for name, r in results.items():
        v, p = r["vs_naive"], r["realtime_vs_naive"]
        print(
            f"  {name}: ray/naive {r['ratio_ray_vs_naive']:.2f}x, ray+pool/naive {r['ratio_ray_pool_vs_naive']:.2f}x, "
            f"local/naive {r['ratio_local_vs_naive']:.2f}x, real-time profile/naive {r['ratio_ray_realtime_vs_naive']:.2f}x; "
            f"decisions agreeing with naive {v['agree']}/{v['ours']} (profile {p['agree']}/{p['ours']}), "
            f"long naive tracks missed {v['missed']}/{v['naive_long_known']} (profile {p['missed']}/"
            f"{p['naive_long_known']}), local == ray == ray+pool: {r['same_decisions_local_ray']}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
