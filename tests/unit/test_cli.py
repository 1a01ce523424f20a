"""The command line, driven through its real entry point."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from streamproc.cli import build_parser, main
from streamproc.commands import models
from streamproc.stages.base import Stage
from streamproc.types import FrameBatch


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for group in ("models", "eval", "demo"):
        assert group in out


def test_models_info_prints_every_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "info")
    assert code == 0
    for name in ("nn1", "nn2", "nn3", "nn4", "nns1", "nns2", "inception_resnet_v1"):
        assert name in out
    nn1 = next(line for line in out.splitlines() if line.startswith("nn1 "))
    assert "140.0" in nn1  # millions of parameters, the paper's figure


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--set", "detector.kind=nope"], "detector.kind"),
        (["demo", "--config", "/nonexistent.yaml"], "does not exist"),
        (["eval", "lfw", "--data", "/nonexistent", "--pairs", "x", "--out", "/tmp/x"], "not a folder"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err


class Divide(Stage):
    name = "divide"

    def process(self, batch: FrameBatch) -> FrameBatch:
        _ = 1 / len(batch.faces)  # a bug: a batch without faces
        return batch


def divide_a_batch(args: argparse.Namespace) -> int:
    Divide()(FrameBatch(stream_id="cam", frames=np.zeros((1, 8, 8, 3), np.uint8), pts=np.zeros(1)))
    return 0


def test_a_bug_in_a_stage_exits_1_with_its_traceback(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_info", divide_a_batch)  # registered as the handler of `models info`
    with caplog.at_level(logging.ERROR, logger="streamproc"):
        code, _, err = run(capsys, "models", "info")
    assert code == 1
    assert not err.startswith("error: ")  # not dressed up as a user mistake
    assert "Traceback (most recent call last)" in caplog.text
    assert "ZeroDivisionError: division by zero" in caplog.text
    assert "stage=divide stream=cam" in caplog.text


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "streamproc.commands.eval", None)  # import of it now fails
    with pytest.raises(ModuleNotFoundError, match=r"streamproc\.commands\.eval"):
        build_parser()


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf command of the CLI by its full name, e.g. ``"models fetch"``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix.strip(): parser}
    return {k: v for name, p in subs[0].choices.items() for k, v in commands(p, f"{prefix} {name}").items()}


def test_every_command_but_the_model_listings_takes_config_and_set() -> None:
    """What the README says under "The command line"."""
    found = commands(build_parser())
    without = {
        name for name, p in found.items() if not {"--config", "--set"} <= set(p._option_string_actions)
    }
    assert without == {"models fetch", "models info", "models list", "models compat"}
    assert {"run", "demo", "enroll", "train", "gallery search", "models promote"} <= set(found)


def test_models_fetch_and_list(
    capsys: pytest.CaptureFixture[str], facenet_keras_h5: Path, mtcnn_weights_dir: Path
) -> None:
    code, out, _ = run(capsys, "models", "fetch")
    assert code == 0 and "facenet-irv1-128@v1" in out
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "facenet-irv1-128" in out and "ready" in out


def test_eval_lfw_on_a_small_pairs_file(
    capsys: pytest.CaptureFixture[str], lfw_dir: Path, tmp_path: Path
) -> None:
    official = (lfw_dir / "pairs.txt").read_text().splitlines()
    # two folds of 3 same + 3 different pairs, taken from the official file's first two folds
    lines = ["2\t3", *official[1:4], *official[301:304], *official[601:604], *official[901:904]]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    out_dir = tmp_path / "report"
    argv = ["eval", "lfw", "--data", str(lfw_dir), "--pairs", str(pairs), "--out", str(out_dir)]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "accuracy" in out
    report = json.loads((out_dir / "report.json").read_text())
    assert report["n_pairs"] == 12 and report["accuracy_mean"] >= 0.8
    assert (out_dir / "roc.png").stat().st_size > 0
    assert not report["embeddings_from_cache"]
    run(capsys, *argv)
    assert json.loads((out_dir / "report.json").read_text())["embeddings_from_cache"]


def test_demo_still_photos(
    capsys: pytest.CaptureFixture[str], celebrity_dir: Path, facenet_keras_h5: Path
) -> None:
    code, out, _ = run(capsys, "demo", "--skip-video")
    assert code == 0
    verification = next(line for line in out.splitlines() if line.startswith("verification:"))
    assert float(verification.split()[1]) >= 0.9
