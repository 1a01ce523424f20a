"""A rolling model upgrade v1 -> v2 -> v1 during a live RTSP stream on a real Ray cluster.

The v2 is made here, as on a fresh clone, the way ``streamproc models fit-head`` makes it by
default: the pretrained MobileFaceNet trunk with a ``192 -> 128`` head that is the ridge map of its
features onto v1's embeddings (``streamproc.training.heads``; it beat the harmonic triplet head
cross-fitted, see README), fitted on the faces of ``TRAIN_PEOPLE`` LFW people, calibrated against
v1 on ``HELD_PEOPLE`` others, and registered in the session's own model cache (``model_cache`` in
tests/conftest.py). The crops and v1 embeddings of those faces are cached in the user's bench cache.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from streamproc import env
from streamproc.config import load_config
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.embedded import connect
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.models import compat, registry
from streamproc.models.promote import promote
from streamproc.runtime.pipeline import RayRunner
from streamproc.stages.emit import MemorySink
from streamproc.training.fit_model import fit_compatible_model, pick_people
from streamproc.training.heads import HeadRecipe
from streamproc.types import Decision

pytestmark = pytest.mark.integration

V2 = "mobilefacenet-h128"
TRAIN_PEOPLE, HELD_PEOPLE, FACES = 160, 60, 3  # LFW people with at least FACES images


class Timed(MemorySink):
    """``MemorySink`` that can wait for a decision."""

    def wait_for(self, test: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(test(d) for _, d in list(self.seen)):
                return True
            time.sleep(0.1)
        return False


@pytest.fixture(scope="module")
def v2_model(lfw_dir: Path, mtcnn_weights_dir: Path, tflite_path: Path) -> str:
    """A small real v2 comparable with v1 (see the module docstring), registered as ``V2``; its version."""
    root = lfw_dir / "lfw-deepfunneled"
    train, held = pick_people(root, TRAIN_PEOPLE, HELD_PEOPLE, FACES)
    cache = env.cache_dir() / "bench" / f"harmonic-fixture-{len(train)}-{len(held)}.npz"
    recipe = HeadRecipe("ridge")
    config = load_config(None, [])
    card = fit_compatible_model(root, train, held, config, recipe, V2, "v2", registry.DEFAULT_MODEL, cache)
    print(f"fixture v2 from {len(train)} faces: {card.thresholds} {card.far_thresholds} {card.metrics}")
    assert compat.compatible("v2", "v1") and compat.compatible("v1", "v2")
    return card.version


def test_promote_v2_during_live_rtsp_then_roll_back(
    ray_cluster: None,
    v2_model: str,
    gallery: Any,
    celebrity_dir: Path,
    face_pipeline: FacePipeline,
    make_config: Any,
    rtsp_server: Any,
    demo_video: Path,
    demo_people: set[str],
) -> None:
    prefix = f"upgrade-{uuid.uuid4().hex[:8]}"
    store = RedisGalleryStore(connect(gallery.url), prefix=prefix, retain_crops=True)
    for person in gallery.people:
        paths = sorted((celebrity_dir / "train" / person).iterdir())[:4]
        result = face_pipeline.embed_subjects([read_image(p) for p in paths])
        keep = ~result.failed
        store.enroll(person, result.embeddings[keep], "v1", crops=result.crops[keep])

    server = rtsp_server(demo_video, loop=True)
    source = {
        "uri": server.url,
        "batch_frames": 4,
        "open_timeout_s": 5.0,
        "stall_timeout_s": 2.0,
        "reconnect_backoff_s": 0.2,
        "queue_frames": 256,
    }
    config = make_config([source], f"gallery.prefix={prefix}", "runtime.gallery_sync_s=0.5")
    sink = Timed()
    marks: dict[str, float] = {}
    errors: list[BaseException] = []

    def operator() -> None:
        try:
            assert sink.wait_for(lambda d: d.identity is not None, 60), "no v1 decision"
            marks["promote"] = time.monotonic()
            result = promote(store, v2_model, progress=False)
            marks["switched"] = time.monotonic()
            assert result.serving.gallery == v2_model and not result.missing
            assert sink.wait_for(lambda d: d.gallery_version == v2_model and d.identity is not None, 40)
            marks["rollback"] = time.monotonic()
            promote(store, rollback=True, progress=False)
            assert sink.wait_for(
                lambda d: (
                    d.model_version == "v1"
                    and d.first_pts >= 0
                    and d.identity is not None
                    and _after(sink, d, marks["rollback"] + 2)
                ),
                40,
            )
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)
        finally:
            runner.stop()

    runner = RayRunner(config, sinks=[sink])
    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    summary = runner.run(duration_s=150)
    thread.join(5)
    store.close()

    assert not errors, errors
    (stream,) = summary.streams.values()
    print(
        f"rolling upgrade: {json.dumps({k: round(v - marks['promote'], 2) for k, v in marks.items()})}; "
        f"frames {stream.frames}, dropped {stream.dropped}, decisions {len(sink.seen)}"
    )
    assert summary.ok and stream.dropped == 0
    decisions = [d for _, d in sink.seen]
    assert all(d.model_version and d.gallery_version for d in decisions)
    assert len({d.event_id for d in decisions}) == len(decisions)
    pairs = {(d.model_version, d.gallery_version) for d in decisions}
    assert {("v1", "v1"), (v2_model, v2_model)} <= pairs, pairs
    named = {d.identity for d in decisions if d.identity is not None}
    assert named <= demo_people, named
    for version in ("v1", v2_model):
        assert {d.identity for d in decisions if d.model_version == version and d.identity}, version


def _after(sink: Timed, decision: Decision, when: float) -> bool:
    return any(t >= when and d is decision for t, d in sink.seen)
