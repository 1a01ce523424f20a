"""bench/video_identification.py runs end to end on real LFW faces and reports sane figures.

The figures themselves (identity switches, wrong names, ...) are what issue 12's work improves; this
test checks that the bench measures them, not that they reach their targets.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamproc.scenes import AppearanceTruth, FaceTruth, GroundTruth
from streamproc.types import Decision

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench" / "video_identification.py"
RATES = (
    "appearance_recall",
    "naive_appearance_recall",
    "wrong_name_rate",
    "naive_wrong_name_rate",
    "stranger_named_rate",
    "naive_stranger_named_rate",
    "stills_detect_identify_rate",
    "expected_stranger_named_rate",
    "naive_expected_stranger_named_rate",
    "naive_matched_appearance_recall",
)


def run_bench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_quick_json_has_every_figure_in_range(lfw_dir: Path, mtcnn_weights_dir: Path) -> None:
    done = run_bench("--quick", "--json", "--data", str(lfw_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    for key in RATES:
        assert 0.0 <= report[key] <= 1.0, (key, report[key])
    assert isinstance(report["id_switches"], int) and 0 <= report["id_switches"] <= report["tracks"]
    assert len(report["switched_tracks"]) == report["id_switches"]
    assert all(" only; naive named " in line for line in report["recall_differences"])
    assert report["fps_ours"] > 0 and report["fps_naive"] > 0
    assert 0 < report["threshold"] < 4 and report["fpir"] == 0.01
    assert report["config"] == "default" and report["model"].startswith("facenet-irv1-128")
    assert report["appearances"] == report["enrolled_appearances"] + report["stranger_appearances"]
    assert report["enrolled_appearances"] >= 1 and report["stranger_appearances"] >= 1
    assert report["decisions_per_appearance"] == pytest.approx(report["decisions"] / report["appearances"])
    # the naive loop names every face of every frame: far more decisions, and it finds enrolled people
    assert report["naive_decisions_per_appearance"] > report["decisions_per_appearance"]
    assert report["naive_appearance_recall"] > 0 and report["stills_detect_identify_rate"] > 0
    assert "identity switches" in done.stderr and "frames/s" in done.stderr  # the table, beside the JSON


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fpir", "1.5"], "--fpir: expected a fraction between 0 and 1, got 1.5"),
        (["--data", "/nonexistent/lfw"], "LFW not found at /nonexistent/lfw/lfw-deepfunneled"),
        (["--config", "/nonexistent/profile.yaml"], "config file /nonexistent/profile.yaml does not exist"),
        (
            ["--set", "detect.every_k_frames=0"],
            "detect.every_k_frames: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    done = run_bench("--quick", *args, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def bench_module() -> Any:
    sys.path.insert(0, str(BENCH.parent))
    try:
        return importlib.import_module("video_identification")
    finally:
        sys.path.remove(str(BENCH.parent))


def two_shot_video(bench: Any) -> Any:
    """Frames 0-1: ada (enrolled) at box A, with bob (a stranger) behind cy (covered). Frames 2-3: after a
    cut, cy (a stranger) at box A."""
    a, b = (100.0, 100.0, 200.0, 230.0), (300.0, 100.0, 400.0, 230.0)
    truth = GroundTruth(25.0, (640, 360), cuts=[2])
    truth.appearances = [
        AppearanceTruth("ada", 0, 0, 1),
        AppearanceTruth("bob", 0, 0, 1),
        AppearanceTruth("cy", 1, 2, 3),
    ]
    shot0 = [FaceTruth("ada", a, 0, 1.0), FaceTruth("bob", b, 1, 0.2)]
    truth.faces = [shot0, shot0, [FaceTruth("cy", a, 2, 1.0)], [FaceTruth("cy", a, 2, 1.0)]]
    return bench.Video(Path("v.mp4"), truth, ["cut", "cut"])


def test_scoring_counts_switches_wrong_names_and_named_strangers() -> None:
    bench = bench_module()
    video = two_shot_video(bench)
    a, b = np.array([102.0, 98, 201, 228]), np.array([300.0, 100, 400, 230])
    seen = [
        bench.Seen(0, 0, a, group=7),
        bench.Seen(0, 1, a, group=7),
        bench.Seen(0, 1, b, group=8),  # bob is hidden (20% visible): this face is nobody's
        bench.Seen(0, 2, a, group=7),  # the track goes on over the cut with cy's face: a switch
        bench.Seen(0, 3, a + 60, group=9),  # IoU < 0.5 with cy: nobody's
    ]
    shown = bench.appearances([video], {"ada"})
    held = bench.held_by_group(seen, [video])
    assert held == {(0, 7): Counter({(0, 0): 2, (0, 2): 1}), (0, 8): Counter(), (0, 9): Counter()}
    decisions = [
        Decision("0", 7, 0.0, 0.1, "ada", 0.3, 3, "v", "g"),  # right for ada, and it names the stranger cy
        Decision("0", 8, 0.0, 0.1, "ada", 0.4, 1, "v", "g"),  # wrong: ada is not in track 8
        Decision("0", 9, 0.1, 0.1, None, 1.4, 1, "v", "g"),
    ]
    out = bench.score_ours(seen, decisions, [video], shown)
    assert out["id_switches"] == 1 and out["switched_tracks"] == [
        "video 0 track 7: ada (cut, 2 faces), cy (cut, 1 faces)"
    ]
    assert out["appearance_recall"] == 1.0 and out["recall_by_kind"] == {"cut": 1.0}
    assert out["wrong_name_rate"] == pytest.approx(1 / 3)
    assert out["stranger_named_rate"] == pytest.approx(1 / 2)  # cy named, bob never
    assert out["decisions_per_appearance"] == pytest.approx(3 / 3)
    assert out["wrong_names"] == ["video 0 track 8: named ada at 0.400, holds no shown face"]


def test_expected_strangers_named_shifts_the_calibration_strangers_by_each_gain() -> None:
    """A method that got 0.3 closer to the gallery on a stranger in video than on the stranger's still
    photo is expected to name every calibration stranger whose still distance is within 0.3 of the
    threshold; a stranger the method never held gains nothing (never named)."""
    bench = bench_module()
    video = two_shot_video(bench)
    shown = bench.appearances([video], {"ada"})  # bob and cy are strangers; cy is held by group 9
    held = {(0, 9): Counter({(0, 2): 3})}
    still = {"bob": 0.8, "cy": 0.9}
    impostors = np.array([0.7, 0.9, 1.2])
    gains = bench.stranger_gains(shown, held, {(0, 9): 0.6}, still)
    assert gains.tolist() == [-np.inf, pytest.approx(0.3)]  # bob never held; cy 0.9 -> 0.6
    expected = bench.expected_strangers_named(gains, impostors, 0.5)
    assert expected == pytest.approx(1 / 6)  # cy: 0.7 - 0.3 <= 0.5 (one of three); bob: none
    gains = bench.stranger_gains(shown, held, {(0, 9): 0.9}, still)
    assert bench.expected_strangers_named(gains, impostors, 0.5) == 0.0


def test_naive_scoring_judges_every_face_on_its_own() -> None:
    bench = bench_module()
    video = two_shot_video(bench)
    a = np.array([100.0, 100, 200, 230])
    seen = [
        bench.Seen(0, 0, a, group=0, name="ada", distance=0.9),  # too far: unknown
        bench.Seen(0, 1, a, group=1, name="ada", distance=0.3),
        bench.Seen(0, 2, a, group=2, name="ada", distance=0.5),  # cy named ada: wrong, and a stranger named
        bench.Seen(0, 3, a, group=3, name="bob", distance=0.6),  # unknown at the threshold
    ]
    shown = bench.appearances([video], {"ada"})
    out = bench.score_naive(seen, [video], shown, threshold=0.55, margin=0.0)
    assert out["appearance_recall"] == 1.0
    assert out["wrong_name_rate"] == pytest.approx(1 / 4)
    assert out["stranger_named_rate"] == pytest.approx(1 / 2)
    assert out["decisions_per_appearance"] == pytest.approx(4 / 3)
    # the product's rule: the stranger's face was a near-tie (next person at 0.55), so it is unknown
    seen[2] = bench.Seen(0, 2, a, group=2, name="ada", distance=0.5, second=0.55)
    ruled = bench.score_naive(seen, [video], shown, threshold=0.55, margin=0.1)
    assert ruled["stranger_named_rate"] == 0.0 and ruled["wrong_name_rate"] == 0.0
    assert ruled["appearance_recall"] == 1.0


def test_recall_differences_name_the_appearances_only_one_method_got_and_why() -> None:
    """Ada is enrolled. The naive loop names her on one face of three (the others are too far or a
    near-tie) and ours decides her track unknown at 0.62: the line says naive only, 1 of its 3 faces,
    her closest distance, and our decision. Where both name her, or neither, there is no line."""
    bench = bench_module()
    video = two_shot_video(bench)
    a = np.array([100.0, 100, 200, 230])
    naive = [
        bench.Seen(0, 0, a, group=0, name="ada", distance=0.9, second=1.5),
        bench.Seen(0, 1, a, group=1, name="ada", distance=0.5, second=1.5),
        bench.Seen(0, 1, a, group=2, name="ada", distance=0.45, second=0.5),  # a near-tie: unknown
    ]
    ours_seen = [bench.Seen(0, 0, a, group=4), bench.Seen(0, 1, a, group=4)]
    unknown = [Decision("0", 4, 0.0, 0.04, None, 0.62, 2, "v", "g")]
    shown = bench.appearances([video], {"ada"})
    ours_held, naive_held = bench.held_by_group(ours_seen, [video]), bench.held_by_group(naive, [video])
    lines = bench.recall_differences((ours_held, unknown), (naive_held, naive), shown, 0.55, 0.1)
    assert lines == [
        "video 0 appearance 0 (ada, cut): naive only; naive named 1 of its 3 faces right (closest 0.450); "
        "ours track 4: unknown at 0.620 (2 faces)"
    ]
    named = [Decision("0", 4, 0.0, 0.04, "ada", 0.5, 2, "v", "g")]
    assert bench.recall_differences((ours_held, named), (naive_held, naive), shown, 0.55, 0.1) == []
    far = [bench.Seen(0, 0, a, group=0, name="ada", distance=0.9, second=1.5)]
    far_held = bench.held_by_group(far, [video])
    lines = bench.recall_differences((ours_held, named), (far_held, far), shown, 0.55, 0.1)
    assert lines == [
        "video 0 appearance 0 (ada, cut): ours only; naive named 0 of its 1 faces right (closest 0.900); "
        "ours track 4: ada at 0.500 (2 faces)"
    ]
