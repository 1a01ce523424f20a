"""``bench/detector_cpu.py`` times MTCNN in each form on real street frames and leaves the module as shipped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import streamproc.detect.mtcnn as mtcnn

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import detector_cpu


def test_detector_bench_prints_both_ways_and_restores_the_detector(shared_data, mtcnn_weights_dir, tmp_path):
    shipped = mtcnn.to_input
    out = tmp_path / "detector.json"
    assert detector_cpu.main(["--every", "50", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("mtcnn_1080p_default", "mtcnn_640x360_realtime", "thumbnail_1080p", "thumbnail_640x360"):
        assert report[key]["earlier_ms"] > 0 and report[key]["now_ms"] > 0, key
    assert report["mtcnn_1080p_default"]["levels_from_frame_ms"] > 0
    assert report["mtcnn_1080p_default"]["whole_passes_ms"] > 0
    *before, now = report["mtcnn_1080p_default"]["faces"]
    # 3 street frames: the same faces, give or take one
    assert len(before) == 3 and now >= 3 and all(abs(now - n) <= 1 for n in before)
    assert mtcnn.to_input is shipped  # later detectors in this process are as shipped
