"""Device throughput of the product's parts: embedding, detection, decoding and the whole pipeline.

Sections (each skipped with the reason when its imports or inputs are missing, e.g. a node
without ray, av or pydantic):

* ``device``: torch version, device name, driver (``nvidia-smi``) or the CPU;
* ``embed``: faces/s of ``Embedder.__call__`` (the call the embed actor makes: uint8 crops to the
  device, normalised there, autocast on CUDA) for each model and precision (float32 everywhere;
  bfloat16 and float16 on CUDA). Real weights when cached, else the architecture randomly
  initialised (said in the row: the speed is the same, the embeddings are not);
* ``detect``: MTCNN frames/s at 640x480 and 1920x1080, in batches of ``--detect-batch`` frames;
* ``decode``: PyAV decode of the street video (or a synthetic one) by 1 and N processes at once;
* ``pipeline``: ``RayRunner`` frames/s on N copies of the video, default config.

``--small`` shrinks every size so that a CPU run takes seconds (the test suite runs it).

    python bench/gpu_throughput.py --device cuda --json out/gpu_throughput.json
    python bench/gpu_throughput.py --small            # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

MODELS = ("facenet-irv1-128", "mobilefacenet-192")
STREET = Path("video") / "street-multiface-1080p.mp4"


# --- device ---------------------------------------------------------------------------------------
def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "cpus": os.cpu_count()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["bf16"] = torch.cuda.is_bf16_supported()
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["driver"] = f"unknown ({exc})"
    else:
        info["name"] = platform.processor() or platform.machine()
        info["driver"] = None
    return info


def precisions(device: torch.device) -> list[str]:
    return ["float32", "bfloat16", "float16"] if device.type == "cuda" else ["float32"]


# --- embed ----------------------------------------------------------------------------------------
def make_embedder(model: str, device: torch.device, precision: str, batch: int) -> tuple[Any, str]:
    """The registry's model, or its architecture randomly initialised when the weights are missing."""
    from streamproc.config import EmbedderConfig
    from streamproc.errors import ModelError
    from streamproc.models import architectures, registry
    from streamproc.models.embedder import Embedder

    config = EmbedderConfig(model=model, device=str(device), precision=precision, batch_size=batch)
    try:
        return Embedder(config), "weights"
    except ModelError as exc:
        card = registry.BUILTIN[model].card
        net = architectures.build(card.arch, card.embedding_dim)
        return Embedder.from_model(net, card, config), f"random init ({str(exc).splitlines()[0][:80]})"


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds of one call, best of ``repeats`` after a warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def bench_embed(device: torch.device, n_faces: int, batch: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for model in MODELS:
        for precision in precisions(device):
            embedder, weights = make_embedder(model, device, precision, batch)
            size = embedder.card.input_size
            crops = rng.integers(0, 256, (n_faces, size, size, 3), dtype=np.uint8)
            seconds = timed(partial(embedder, crops), repeats)
            rows.append(
                {
                    "model": model,
                    "precision": precision,
                    "batch": batch,
                    "faces": n_faces,
                    "faces_per_s": n_faces / seconds,
                    "weights": weights,
                }
            )
            print(
                f"  {model:<18} {precision:<9} batch {batch:<5} {n_faces / seconds:10.1f} faces/s  ({weights})"
            )
    return rows


# --- detect ---------------------------------------------------------------------------------------
def sample_frame(video: Path | None) -> np.ndarray:
    """The video's first frame, or a synthetic one (gradient and noise) when there is no video."""
    if video is not None:
        from streamproc.sources import SourceConfig, VideoSource

        with VideoSource(SourceConfig(uri=str(video), batch_frames=1)) as source:
            for batch in source:
                return np.asarray(batch.frames[0])
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 60, (1080, 1920, 3), dtype=np.uint8)
    frame[..., 0] += np.linspace(0, 150, 1920, dtype=np.uint8)[None, :]
    return frame


def bench_detect(
    device: torch.device, frame: np.ndarray, sizes: list[tuple[int, int]], batch: int, repeats: int
) -> list[dict[str, Any]]:
    import cv2

    from streamproc.config import DetectorConfig
    from streamproc.detect import build_detector

    detector = build_detector(DetectorConfig(device=str(device)))
    rows = []
    for width, height in sizes:
        images = [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)] * batch
        seconds = timed(partial(detector, images), repeats)
        rows.append({"size": f"{width}x{height}", "batch": batch, "frames_per_s": batch / seconds})
        print(f"  MTCNN {width}x{height:<5} batch {batch:<3} {batch / seconds:10.1f} frames/s")
    return rows


# --- decode ---------------------------------------------------------------------------------------
def decode_count(path: str, max_frames: int) -> int:
    from streamproc.sources import SourceConfig, VideoSource

    frames = 0
    with VideoSource(SourceConfig(uri=path)) as source:
        for batch in source:
            frames += len(batch)
            if frames >= max_frames:
                break
    return frames


def bench_decode(video: Path, processes: list[int], max_frames: int) -> list[dict[str, Any]]:
    rows = []
    for n in processes:
        with ProcessPoolExecutor(n) as pool:
            pool.submit(decode_count, str(video), 1).result()  # workers started and imports done
            started = time.perf_counter()
            frames = sum(pool.map(decode_count, [str(video)] * n, [max_frames] * n))
            wall = time.perf_counter() - started
        rows.append({"processes": n, "frames": frames, "fps_total": frames / wall})
        print(f"  decode, {n} process(es): {frames / wall:10.1f} frames/s in all")
    return rows


def synthetic_video(folder: Path, seconds: float, size: tuple[int, int]) -> Path:
    from streamproc.sources.synth import write_video

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) for _ in range(int(seconds * 25))]
    return write_video(folder / "synthetic.mp4", frames, 25.0)


# --- pipeline -------------------------------------------------------------------------------------
def bench_pipeline(video: Path, copies: int, device: torch.device) -> dict[str, Any]:
    import ray

    from streamproc.config import load_config
    from streamproc.gallery.index import GalleryIndex
    from streamproc.runtime.pipeline import RayRunner

    started_ray = not ray.is_initialized()
    if started_ray:
        # address="local": a cluster of our own, never someone else's running on this node
        ray.init(
            address="local", include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False
        )
    sources = [{"uri": str(video), "stream_id": f"copy-{i}"} for i in range(copies)]
    overrides = ["sources=" + json.dumps(sources), f"embedder.device={device}", f"detector.device={device}"]
    config = load_config(None, overrides)
    row = np.random.default_rng(0).normal(size=(1, 128)).astype(np.float32)
    index = GalleryIndex.from_arrays(["nobody"], ["nobody"], row, model_version="v1")
    try:
        summary = RayRunner(config, index=index).run()
    finally:
        if started_ray:
            ray.shutdown()
    print(f"  ray pipeline, {copies} cop(ies) of {video.name}: {summary.fps:10.1f} frames/s in all")
    return {"copies": copies, "video": video.name, "frames": summary.frames, "fps": summary.fps}


# --- main -----------------------------------------------------------------------------------------
def section(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    """Run one section; an ImportError or a missing input skips it with the reason."""
    print(f"\n== {name}", flush=True)
    try:
        report[name] = fn()
    except (ImportError, FileNotFoundError) as exc:
        report[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
        print(f"  skipped: {report[name]['skipped']}")


def shared_video() -> Path | None:
    root = Path(
        os.environ.get(
            "STREAMPROC_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
        )
    )
    path = root / STREET
    return path if path.is_file() else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes: seconds on a CPU (CI)")
    parser.add_argument("--faces", type=int, help="faces per embed measurement (default 8192; small 16)")
    parser.add_argument("--embed-batch", type=int, help="embedder batch size (default 1024; small 8)")
    parser.add_argument("--detect-batch", type=int, help="frames per detector call (default 16; small 1)")
    parser.add_argument("--processes", type=int, help="decode processes for the N-process row (default CPUs)")
    parser.add_argument("--copies", type=int, help="video copies in the pipeline run (default 4; small 1)")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    small = args.small
    device = torch.device(args.device)
    report: dict[str, Any] = {"small": small}
    section(report, "device", lambda: device_info(device))
    print("  " + ", ".join(f"{k} {v}" for k, v in report["device"].items()))
    faces, batch = args.faces or (16 if small else 8192), args.embed_batch or (8 if small else 1024)
    section(report, "embed", lambda: bench_embed(device, faces, batch, 1 if small else 3))
    video = shared_video()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        if small or video is None:
            section(report, "synthetic video", lambda: str(synthetic_video(Path(work), 1.0, (320, 240))))
            made = report["synthetic video"]
            video = Path(made) if isinstance(made, str) else None
        sizes = [(160, 120), (320, 240)] if small else [(640, 480), (1920, 1080)]
        frame = sample_frame(shared_video() if not small else None)
        detect_batch = args.detect_batch or (1 if small else 16)
        section(report, "detect", lambda: bench_detect(device, frame, sizes, detect_batch, 1 if small else 3))
        if video is None:
            print("\n== decode, pipeline\n  skipped: no video (PyAV missing?)")
        else:
            n = args.processes or (2 if small else os.cpu_count() or 1)
            section(report, "decode", lambda: bench_decode(video, [1, n], 25 if small else 10**9))
            copies = args.copies or (1 if small else 4)
            section(report, "pipeline", lambda: bench_pipeline(video, copies, device))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
