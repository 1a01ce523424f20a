"""``configs/realtime.yaml`` end to end, as a user runs it: enrol the celebrities with the profile
(MobileFaceNet, version mfn192) into Redis, then run the demo video of real faces with it,
detecting on a shrunk copy of each frame."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from streamproc.commands.gallery import enroll_people
from streamproc.config import load_config
from streamproc.faces import FacePipeline
from streamproc.runtime.local import LocalRunner

from .conftest import Gallery

PROFILE = Path(__file__).resolve().parents[3] / "configs" / "realtime.yaml"


def test_realtime_profile_names_everyone_shown(
    gallery: Gallery, celebrity_dir: Path, demo_video: Path, demo_people: set[str]
) -> None:
    sources = [{"uri": str(demo_video), "stream_id": "demo"}]
    # the demo video is 480 px wide: a 320 px copy keeps its 70 px faces above the 40 px minimum
    config = load_config(
        PROFILE,
        [
            f"gallery.url={json.dumps(gallery.url)}",
            f"gallery.prefix=rt-{uuid.uuid4().hex[:8]}",
            "sources=" + json.dumps(sources),
            "detector.max_side=320",
            "detect.every_k_frames=2",
        ],
    )
    train = celebrity_dir / "train"
    people = {name: sorted((train / name).iterdir())[:4] for name in gallery.people}  # not the stranger
    assert enroll_people(config, people, quiet=True) == 0
    assert FacePipeline(config).detector.detect_scale(360, 480) == 320 / 480
    summary = LocalRunner(config).run()
    assert summary.ok
    named = {d.identity for d in summary.decisions}
    assert named == demo_people | {None}, (
        named
    )  # everyone enrolled, after same-place cuts; the stranger unknown
    assert all(d.model_version == d.gallery_version == "mfn192" for d in summary.decisions)
