"""Fixtures of the end-to-end pipeline tests: one Ray cluster, a real gallery, demo videos.

* ``ray_cluster`` (from tests/conftest.py): one local Ray cluster for the session (2 CPUs, ~200 MB object store, no
  dashboard); runners find it initialised and leave it alone.
* ``gallery``: an embedded Redis-compatible server (``EmbeddedRedis``, the product's own) in a
  temporary folder, with four of the five celebrities enrolled from a few of their *train* images
  through ``FacePipeline`` (the same detector, alignment and model as the video pipeline); the fifth,
  ``STRANGER``, is never enrolled.
* ``make_demo_video(path, segments)``: a 480x360 video at 12 fps in which faces cut from the
  *val* images (never enrolled) move along two fixed lanes of a plain background. Every segment
  boundary is a hard cut where the next person appears where the last one stood: the tracker and the
  appearance guard must split there. ``demo_video`` is a ready one, with the stranger in it.
* ``make_config(sources, *overrides)``: a small, fast pipeline config against that gallery.
* ``rtsp_server``: the real GStreamer RTSP server factory of ``tests/integration/rtsp``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamproc.config import Config, load_config
from streamproc.demo_video import face_sprite
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.embedded import EmbeddedRedis, connect
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.sources.synth import write_video

WIDTH, HEIGHT, FPS = 480, 360, 12
SPRITE = 112  # side of the pasted face patch; the face itself is about 70 px
SEGMENT_FRAMES = 18  # 1.5 s per segment
TRAIN_IMAGES = 4  # enrolled images per person

STRANGER = "mindy_kaling"  # shown, never enrolled
Segment = tuple[str | None, str | None]  # who walks in the upper and in the lower lane
DEFAULT_SEGMENTS: tuple[Segment, ...] = (
    ("ben_afflek", "madonna"),
    ("jerry_seinfeld", STRANGER),  # each takes the place of the person above them at a hard cut
    ("elton_john", None),
)


def _load_rtsp_fixtures() -> Any:
    path = Path(__file__).resolve().parents[1] / "rtsp" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_pipeline_rtsp_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rtsp_server = _load_rtsp_fixtures().rtsp_server


@pytest.fixture(scope="session")
def face_pipeline(mtcnn_weights_dir: Path) -> FacePipeline:
    return FacePipeline(load_config(None, ["embedder.threads=1"]))  # see make_config


@dataclass(frozen=True)
class Gallery:
    url: str
    prefix: str
    people: tuple[str, ...]
    model_version: str

    def overrides(self) -> list[str]:
        return [f"gallery.url={json.dumps(self.url)}", f"gallery.prefix={self.prefix}"]

    def store(self) -> RedisGalleryStore:
        return RedisGalleryStore(connect(self.url), prefix=self.prefix)


@pytest.fixture(scope="session")
def gallery(
    celebrity_dir: Path, face_pipeline: FacePipeline, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gallery]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("gallery"))
    url = server.start()
    prefix = f"pipe-{uuid.uuid4().hex[:8]}"
    people = tuple(
        sorted(p.name for p in (celebrity_dir / "train").iterdir() if p.is_dir() and p.name != STRANGER)
    )
    store = RedisGalleryStore(connect(url), prefix=prefix)
    for person in people:
        images = [read_image(p) for p in sorted((celebrity_dir / "train" / person).iterdir())[:TRAIN_IMAGES]]
        result = face_pipeline.embed_subjects(images)
        store.enroll(person, result.embeddings[~result.failed], face_pipeline.model_version)
    store.close()
    yield Gallery(url, prefix, people, face_pipeline.model_version)
    server.stop()


def demo_frames(sprites: dict[str, np.ndarray], segments: Sequence[Segment]) -> list[np.ndarray]:
    """Frames where people move right along two fixed lanes, 2 px a frame: at every segment boundary
    the next person takes the place of the last one mid-stride (a hard cut that boxes cannot see)."""
    background = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    background[:, :, 1] = np.linspace(60, 160, WIDTH).astype(np.uint8)[None, :]
    frames = []
    for index, pair in enumerate(segments):
        for step in range(SEGMENT_FRAMES):
            frame = background.copy()
            for lane, person in enumerate(pair):
                if person is None:
                    continue
                x = 20 + lane * 240 + (index * SEGMENT_FRAMES + step) * 2 % 108  # 3 segments, then back
                y = 40 if lane == 0 else 200
                frame[y : y + SPRITE, x : x + SPRITE] = sprites[person]
            frames.append(frame)
    return frames


MakeVideo = Callable[..., Path]


@pytest.fixture(scope="session")
def make_demo_video(celebrity_dir: Path, face_pipeline: FacePipeline) -> MakeVideo:
    sprites = {
        p.name: face_sprite(face_pipeline.detector, read_image(sorted(p.iterdir())[0]))
        for p in sorted((celebrity_dir / "val").iterdir())
        if p.is_dir()
    }

    def make(path: Path, segments: Sequence[Segment] = DEFAULT_SEGMENTS) -> Path:
        return write_video(path, demo_frames(sprites, segments), FPS)

    return make


@pytest.fixture(scope="session")
def demo_video(make_demo_video: MakeVideo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_video(tmp_path_factory.mktemp("video") / "demo.mp4")


@pytest.fixture(scope="session")
def demo_people() -> set[str]:
    """The enrolled people who appear in ``demo_video`` (the stranger is not one of them)."""
    return {p for pair in DEFAULT_SEGMENTS for p in pair if p is not None} - {STRANGER}


MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(run_settings: list[str]) -> MakeConfig:
    """``make_config(sources, *overrides)``: small, fast settings (detect every 2nd frame, decide
    after 3 faces, final after 6) against the session gallery."""

    def make(sources: Sequence[dict[str, Any]], *extra: str) -> Config:
        return load_config(None, [*run_settings, "sources=" + json.dumps(list(sources)), *extra])

    return make


@pytest.fixture
def run_settings(gallery: Gallery) -> list[str]:
    """The overrides of ``make_config`` (without sources), for ``streamproc run --set``."""
    return [
        *gallery.overrides(),
        "detect.every_k_frames=2",
        "aggregate.min_frames=3",
        "aggregate.n_frames=6",
        "runtime.embed_max_wait_ms=5",
        "runtime.max_restarts=0",
        "embedder.threads=1",  # one torch thread: spinning OpenMP threads crawl on a shared 2-core box
    ]
