"""report.json keys and values, and the ROC plot file."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from streamproc.eval.lfw import EmbedResult, LfwPairs, LfwResult, evaluate
from streamproc.eval.report import write_report

REQUIRED_KEYS = {
    "accuracy_mean",
    "accuracy_sem",
    "val_at_far_1e-3",
    "far_at_val_threshold",
    "threshold_mean",
    "n_pairs",
    "n_images",
    "n_failed_detections",
    "images_per_second",
    "model",
    "int8_accuracy_mean",
    "int8_accuracy_sem",
    "fold_accuracies",
}


def make_result(tmp_path: Path, n_people: int = 8, seed: int = 0) -> LfwResult:
    """Two folds of pairs over people whose two images embed near a per-person random direction."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, 16))
    vectors: dict[str, np.ndarray] = {}
    for k in range(n_people):
        for i in (1, 2):
            v = centres[k] / np.linalg.norm(centres[k]) + rng.normal(scale=0.1, size=16)
            vectors[f"P{k}/P{k}_{i:04d}.jpg"] = (v / np.linalg.norm(v)).astype(np.float32)
    for name in vectors:  # evaluate checks that the images exist; the content is not read here
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    half = n_people // 2
    same_left = [f"P{k}/P{k}_0001.jpg" for k in range(n_people)]
    same_right = [f"P{k}/P{k}_0002.jpg" for k in range(n_people)]
    diff_right = [f"P{(k + 1) % n_people}/P{(k + 1) % n_people}_0002.jpg" for k in range(n_people)]
    left = same_left[:half] + same_left[:half] + same_left[half:] + same_left[half:]
    right = same_right[:half] + diff_right[:half] + same_right[half:] + diff_right[half:]
    same = np.array(([True] * half + [False] * half) * 2)
    pairs = LfwPairs(left=left, right=right, same=same, fold=np.repeat([0, 1], 2 * half))

    def embed(paths: list[Path]) -> EmbedResult:
        rows = [vectors[f"{p.parent.name}/{p.name}"] for p in paths]
        return EmbedResult(np.stack(rows), failed=np.array([p.parent.name == "P0" for p in paths]))

    return evaluate(pairs, tmp_path, embed, model_name="toy-16d", progress=False)


def test_report_json_has_every_key(tmp_path: Path) -> None:
    result = make_result(tmp_path / "images")
    path = write_report(
        result, tmp_path / "out", {"detector": {"kind": "mtcnn"}, "wall_seconds": np.float64(1.5)}
    )
    assert path == tmp_path / "out" / "report.json"
    report = json.loads(path.read_text())
    assert not REQUIRED_KEYS - set(report)
    assert report["model"] == "toy-16d"
    assert report["n_pairs"] == 16
    assert report["n_images"] == 16
    assert report["n_failed_detections"] == 2
    assert report["accuracy_mean"] == pytest.approx(result.kfold.mean)
    assert report["fold_accuracies"] == result.kfold.accuracies.tolist()
    assert report["detector"] == {"kind": "mtcnn"}
    assert report["wall_seconds"] == 1.5


def test_roc_png_is_written_without_touching_pyplot(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    write_report(make_result(tmp_path / "images"), tmp_path / "out", {})
    png = (tmp_path / "out" / "roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"accuracy_mean": 1.0}, "expected keys other than the computed ones"),
        ({"callback": print}, "expected JSON-like values"),
    ],
)
def test_bad_extra(tmp_path: Path, extra: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_report(make_result(tmp_path / "images"), tmp_path / "out", extra)
