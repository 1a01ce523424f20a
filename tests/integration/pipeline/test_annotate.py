"""``streamproc run --annotate``: the demo video (real LFW faces, five people enrolled) comes back with
every tracked face boxed and labelled with its track's decision, on the local runner and on Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamproc.annotate import Annotator, Label, colour_for, draw, label_text
from streamproc.cli import main
from streamproc.runtime.local import LocalRunner
from streamproc.sources.config import SourceConfig
from streamproc.sources.source import VideoSource
from streamproc.types import Decision

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Any]


def frames_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with VideoSource(SourceConfig(uri=str(path))) as video:
        batches = list(video)
    return np.concatenate([b.frames for b in batches]), np.concatenate([b.pts for b in batches])


def latest(decisions: list[Decision]) -> dict[int, Decision]:
    by_track: dict[int, Decision] = {}
    for d in decisions:
        by_track[d.track_id] = d  # in emission order: a revision comes after its decision
    return by_track


def off(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_local_run_boxes_and_names_every_decided_face(
    make_config: MakeConfig, demo_video: Path, demo_people: set[str], tmp_path: Path
) -> None:
    config = make_config([{"uri": str(demo_video)}])
    annotator = Annotator(tmp_path / "ann", config.sources, hold_frames=config.detect.every_k_frames)

    summary = LocalRunner(config, annotator=annotator).run()
    written = annotator.write({sid: s.frames for sid, s in summary.streams.items()})

    assert summary.ok
    video = written["demo"]
    source, pts = frames_of(demo_video)
    out, out_pts = frames_of(video.path)
    assert len(out) == len(source) == video.frames == summary.frames
    assert np.allclose(out_pts, pts)
    decided = latest(summary.decisions)
    named = {d.identity for d in decided.values() if d.identity is not None}
    assert named == demo_people
    for track_id, d in decided.items():  # each decision's label was drawn on its track's frames
        assert video.labels[label_text(track_id, d)] > 0, (label_text(track_id, d), video.labels)
    # on every frame where a named track has a box: the output is the source with that label drawn
    # (closer to it than to the same box drawn with another name), and is the source elsewhere
    rows = annotator.tracked("demo")
    checked = 0
    for pts_i, track_f, *box in rows:
        d = decided.get(int(track_f))
        if d is None or d.identity is None:
            continue
        i = int(np.argmin(np.abs(pts - pts_i)))
        x1, y1, x2, y2 = (float(v) for v in box)
        right = draw(source[i], [Label((x1, y1, x2, y2), label_text(d.track_id, d), colour_for(d))])
        wrong = draw(source[i], [Label((x1, y1, x2, y2), f"track {d.track_id}: nobody", colour_for(d))])
        text = np.abs(right.astype(np.int16) - wrong).max(axis=2) > 60  # where the two names differ
        assert text.sum() > 50
        assert off(out[i][text], right[text]) < off(out[i][text], wrong[text]) / 3
        edge = slice(int(y1), int(y1) + 2), slice(int(x1), int(x2))  # the box's top edge
        assert off(out[i][edge], source[i][edge]) > 30
        assert off(out[i][-20:, :40], source[i][-20:, :40]) < 6  # a corner no face reaches
        checked += 1
    assert checked >= 10


def test_cli_annotates_on_ray_as_on_the_local_runner(
    ray_cluster: None,
    run_settings: list[str],
    demo_video: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outputs = {}
    for runner in ("ray", "local"):
        argv = ["run", "--source", str(demo_video), "--runner", runner, "--annotate", str(tmp_path / runner)]
        for item in run_settings:
            argv += ["--set", item]
        assert main(argv) == 0
        out = capsys.readouterr().out
        path = tmp_path / runner / "demo.mp4"
        assert f"annotated demo: {path} (54 frames" in out, out
        outputs[runner] = frames_of(path)[0]

    source = frames_of(demo_video)[0]
    assert len(outputs["ray"]) == len(outputs["local"]) == len(source) == 54
    boxed = [off(a, b) for a, b in zip(outputs["ray"], source, strict=True)]
    assert sum(x > 1.0 for x in boxed) >= 40, boxed  # faces are on screen in most frames
    assert off(outputs["ray"], outputs["local"]) < 0.5  # the same tracks, names and boxes
