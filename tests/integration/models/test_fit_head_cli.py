"""``streamproc models fit-head``: a v2 comparable with v1 from a folder of labelled faces."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.models import compat, registry

pytestmark = pytest.mark.integration


def test_fit_head_registers_a_model_calibrated_against_v1(
    lfw_dir: Path,
    mtcnn_weights_dir: Path,
    tflite_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["models", "fit-head", "--data", str(lfw_dir), "--out", str(tmp_path), "--name", "fit-cli-try"]
    assert main([*args, "--version", "v7", "--people", "40", "--held-out", "10", "--faces", "2"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "registered fit-cli-try@v7, compatible with v7, v1" in out
    card = registry.card("fit-cli-try")
    assert card.embedding_dim == 128 and card.metrics["train_people"] == 40
    assert compat.threshold("v7", "v1") == card.thresholds["v1"]
    assert compat.threshold("v1", "v7") == card.thresholds["as-gallery:v1"]


def test_fit_head_refuses_the_old_models_version(
    lfw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["models", "fit-head", "--data", str(lfw_dir), "--out", str(tmp_path), "--version", "v1"]) == 2
    )
    assert "that is the old model's version" in capsys.readouterr().err
