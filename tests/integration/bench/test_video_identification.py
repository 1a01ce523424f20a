"""bench/video_identification.py runs end to end on real LFW faces and reports sane figures.

The figures themselves (identity switches, wrong names, ...) are what issue 12's work improves; this
test checks that the bench measures them, not that they reach their targets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert report["fps_ours"] > 0 and report["fps_naive"] > 0
    assert 0 < report["threshold"] < 4 and report["fpir"] == 0.01
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
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    done = run_bench("--quick", *args, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
