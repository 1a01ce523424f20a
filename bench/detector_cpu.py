"""Detector cost on one CPU core: MTCNN as shipped against its earlier forms, in the same process.

The earlier forms are the same weights and code (1) with the nets in NCHW layout (now
channels_last) and every pyramid level resized from the frame, (2) in channels_last with every
level still resized from the frame (now a level 16x smaller or more is read off the frame's integral
image, ``MTCNN.pyramid_integral``), and (3) with P-Net on whole levels and R-Net / O-Net on 2048 / 512 crops
a pass (now 64-row bands of a level and 128 / 32 crops, sized for the CPU's caches), so the ratios
are what each change bought. Also the shot-cut thumbnail that every decoded frame goes through: a
bilinear grid of the frame (now) against all its pixels (before).

Frames: every 5th frame of the 1080p street video (default config: faces from 20 px) and the same
frames shrunk to 640x360 (the real-time profile: faces from 40 px). Prints ms a frame each way,
the ratios, and the faces found each way (no change is bit-identical: the layouts and pass sizes
sum in another order, and a level read off the integral image differs from OpenCV's by one grey
level where its mean is a tie).

    python bench/detector_cpu.py [--json out/detector_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import math
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
    """Each form times one pass over the frames in turn, ``repeats`` rounds; its best pass counts
    (the first form timed in a process pays for warming up, whichever it is)."""
    detector = build_detector(load_config(config_path).detector)
    assert isinstance(detector, mtcnn.MTCNN)
    nets = (detector.pnet, detector.rnet, detector.onet)
    shipped_input = mtcnn.to_input

    def form(channels_last: bool, integral: float, passes: tuple[int, int, int | None]) -> None:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for net in nets:
            net.to(memory_format=layout)  # type: ignore[call-overload]
        mtcnn.to_input = (
            shipped_input
            if channels_last
            else lambda pixels, device: shipped_input(pixels, device).contiguous()
        )
        detector.pyramid_integral = integral
        detector.rnet_chunk, detector.onet_chunk, detector.pnet_band = passes

    shipped_passes = (detector.rnet_chunk, detector.onet_chunk, detector.pnet_band)
    whole = (mtcnn.MTCNN.rnet_chunk, mtcnn.MTCNN.onet_chunk, None)
    forms: dict[str, tuple[bool, float, tuple[int, int, int | None]]] = {
        "earlier": (False, math.inf, whole),
        "levels_from_frame": (True, math.inf, whole),
        "whole_passes": (True, mtcnn.MTCNN.pyramid_integral, whole),
        "now": (True, mtcnn.MTCNN.pyramid_integral, shipped_passes),
    }
    best = dict.fromkeys(forms, math.inf)
    faces = {}
    try:
        for _ in range(repeats):
            for key, settings in forms.items():
                form(*settings)
                best[key] = min(best[key], per_frame_ms(lambda f: detector([f]), frames, 1))
        for key, settings in forms.items():
            form(*settings)
            faces[key] = sum(len(detector([f])[0]) for f in frames)
    finally:
        mtcnn.to_input = shipped_input  # the module's; this detector is dropped
    now = best["now"]
    print(
        f"  MTCNN {name:<27} earlier {best['earlier']:7.1f}  levels from the frame {best['levels_from_frame']:7.1f}  "
        f"whole passes {best['whole_passes']:7.1f}  now {now:7.1f} ms/frame  ratio {best['earlier'] / now:4.2f}x "
        f"({best['levels_from_frame'] / best['whole_passes']:4.2f}x from the pyramid, "
        f"{best['whole_passes'] / now:4.2f}x from cache-sized passes)  faces {' -> '.join(str(faces[k]) for k in forms)}",
        flush=True,
    )
    return {
        "earlier_ms": best["earlier"],
        "levels_from_frame_ms": best["levels_from_frame"],
        "whole_passes_ms": best["whole_passes"],
        "now_ms": now,
        "ratio": best["earlier"] / now,
        "pyramid_ratio": best["levels_from_frame"] / best["whole_passes"],
        "passes_ratio": best["whole_passes"] / now,
        "faces": [faces[k] for k in forms],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeats", type=int, default=3, help="rounds: passes over the frames per form")
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
