"""``bench/gpu_throughput.py --small`` runs every section on the CPU and writes positive figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "gpu_throughput.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_throughput"] = module  # its decode workers pickle functions by module name
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("ray_cluster")
def test_small_cpu_run_measures_every_section(tmp_path: Path) -> None:
    bench = load_bench()
    out = tmp_path / "gpu.json"
    assert bench.main(["--small", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"]["device"] == "cpu" and report["device"]["torch"]
    embed = report["embed"]
    assert {(r["model"], r["precision"]) for r in embed} == {
        ("facenet-irv1-128", "float32"),
        ("mobilefacenet-192", "float32"),
    }
    assert all(r["faces_per_s"] > 0 and r["weights"] == "weights" for r in embed)
    assert [r["size"] for r in report["detect"]] == ["160x120", "320x240"]
    assert all(r["frames_per_s"] > 0 for r in report["detect"])
    assert [r["processes"] for r in report["decode"]] == [1, 2]
    assert all(r["frames"] == 25 * r["processes"] for r in report["decode"])
    assert report["pipeline"]["frames"] == 25 and report["pipeline"]["fps"] > 0


def test_a_section_whose_import_fails_is_skipped_with_the_reason() -> None:
    bench = load_bench()
    report: dict = {}

    def needs_missing() -> None:
        import streamproc_no_such_module  # type: ignore[import-not-found]  # noqa: F401

    bench.section(report, "pipeline", needs_missing)
    assert report["pipeline"]["skipped"].startswith("ModuleNotFoundError: No module named")
