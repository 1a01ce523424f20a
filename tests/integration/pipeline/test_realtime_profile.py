"""``configs/realtime.yaml`` end to end: the demo video of real faces, a gallery enrolled with the
profile's own model (MobileFaceNet, version mfn192), detection on a shrunk copy of each frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streamproc.config import load_config
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.index import GalleryIndex
from streamproc.runtime.local import LocalRunner

PROFILE = Path(__file__).resolve().parents[3] / "configs" / "realtime.yaml"


def enroll(pipeline: FacePipeline, root: Path) -> GalleryIndex:
    names, rows = [], []
    for person in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        result = pipeline.embed_subjects([read_image(p) for p in sorted(person.iterdir())[:4]])
        mean = result.embeddings[~result.failed].mean(axis=0)
        names.append(person.name)
        rows.append(mean / np.linalg.norm(mean))
    return GalleryIndex.from_arrays(names, names, np.stack(rows), model_version=pipeline.model_version)


def test_realtime_profile_names_everyone_shown(
    celebrity_dir: Path, demo_video: Path, demo_people: set[str]
) -> None:
    sources = [{"uri": str(demo_video), "stream_id": "demo"}]
    # the demo video is 480 px wide: a 320 px copy keeps its faces above the 40 px minimum
    config = load_config(
        PROFILE, ["sources=" + json.dumps(sources), "detector.max_side=320", "detect.every_k_frames=2"]
    )
    pipeline = FacePipeline(config)
    assert pipeline.model_version == "mfn192"
    assert pipeline.detector.detect_scale(360, 480) == 320 / 480
    summary = LocalRunner(config, index=enroll(pipeline, celebrity_dir)).run()
    assert summary.ok
    assert {d.identity for d in summary.decisions} == demo_people
    assert all(d.model_version == "mfn192" for d in summary.decisions)
