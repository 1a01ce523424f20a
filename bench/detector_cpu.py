"""Detector cost on one CPU core: MTCNN as shipped against its earlier form, in the same process.

The earlier form is the same weights and code with the nets in NCHW layout (now channels_last),
so the ratio is what the layout bought. Also the shot-cut thumbnail that every decoded frame goes
through: a bilinear grid of the frame (now) against all its pixels (before).

Frames: every 5th frame of the 1080p street video (default config: faces from 20 px) and the same
frames shrunk to 640x360 (the real-time profile: faces from 40 px). Prints ms a frame each way,
the ratio, and the faces found each way (the layouts sum in another order: not bit-identical).

    python bench/detector_cpu.py [--json out/detector_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np
import torch

import streamproc.detect.mtcnn as mtcnn
import streamproc.stages.schedule as schedule
from streamproc import env
from streamproc.config import load_config
from streamproc.detect import build_detector
from streamproc.sources import SourceConfig, VideoSource

REALTIME_PROFILE = Path(__file__).resolve().parents[1] / "configs" / "realtime.yaml"


def earlier_thumbnail(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, schedule._THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def per_frame_ms(fn: Callable[[np.ndarray], Any], frames: list[np.ndarray], repeats: int) -> float:
    fn(frames[0])  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        for frame in frames:
            fn(frame)
    return (time.perf_counter() - started) * 1000 / (repeats * len(frames))


def compare(name: str, config_path: Path | None, frames: list[np.ndarray], repeats: int) -> dict[str, Any]:
    detector = build_detector(load_config(config_path).detector)
    assert isinstance(detector, mtcnn.MTCNN)
    shipped = per_frame_ms(lambda f: detector([f]), frames, repeats)
    faces = sum(len(detector([f])[0]) for f in frames)
    nets = (detector.pnet, detector.rnet, detector.onet)
    kept = mtcnn.to_input
    mtcnn.to_input = lambda pixels, device: kept(pixels, device).contiguous()
    for net in nets:
        net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    try:
        earlier = per_frame_ms(lambda f: detector([f]), frames, repeats)
        earlier_faces = sum(len(detector([f])[0]) for f in frames)
    finally:
        mtcnn.to_input = kept
        for net in nets:
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    print(
        f"  MTCNN {name:<34} earlier {earlier:8.1f} ms/frame  now {shipped:8.1f} ms/frame  "
        f"ratio {earlier / shipped:5.2f}x   faces {earlier_faces} -> {faces}",
        flush=True,
    )
    return {
        "earlier_ms": earlier,
        "now_ms": shipped,
        "ratio": earlier / shipped,
        "faces": [earlier_faces, faces],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the frames per timing")
    parser.add_argument("--every", type=int, default=5, help="take every n-th frame of the video")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    video = env.shared_data() / "video" / "street-multiface-1080p.mp4"
    if not video.is_file():
        print(f"skipped: {video} not found (set STREAMPROC_SHARED_DATA)")
        return 0
    with VideoSource(SourceConfig(uri=str(video))) as source:
        full = [frame for batch in source for frame in batch.frames][:: args.every]
    small = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in full]
    print(f"one thread, {len(full)} frames of {video.name}; load average {os.getloadavg()[0]:.2f}")
    report = {
        "mtcnn_1080p_default": compare("1080p, default config", None, full, args.repeats),
        "mtcnn_640x360_realtime": compare(
            "640x360, real-time profile", REALTIME_PROFILE, small, args.repeats
        ),
    }
    for name, frames in (("1080p", full), ("640x360", small)):
        earlier = per_frame_ms(earlier_thumbnail, frames, 20)
        now = per_frame_ms(schedule._thumbnail, frames, 20)
        report[f"thumbnail_{name}"] = {"earlier_ms": earlier, "now_ms": now, "ratio": earlier / now}
        print(
            f"  cut thumbnail {name:<26} earlier {earlier:8.3f} ms/frame  now {now:8.3f} ms/frame  ratio {earlier / now:5.2f}x"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
