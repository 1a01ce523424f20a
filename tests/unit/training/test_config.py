"""TrainConfig: defaults, cross-field errors, and the shipped configs/train/*.yaml files."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.errors import ConfigError
from streamproc.training.config import TrainConfig, load_train_config

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = sorted((ROOT / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = load_train_config(path)
    assert isinstance(config, TrainConfig)
    assert config.global_batch % config.num_workers == 0


def test_there_are_shipped_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"finetune-irv1.yaml", "nns2-scratch.yaml"}


def test_defaults_follow_the_paper() -> None:
    config = load_train_config(None, ["data=/tmp/x"])
    assert (config.margin, config.mining, config.optimizer, config.learning_rate) == (
        0.2,
        "semi-hard",
        "adagrad",
        0.05,
    )
    assert config.input_size == 160 and config.parent == "facenet-irv1-128"
    assert config.pairs_file == Path("/tmp/pairs.txt")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["num_workers=3"], "num_workers=3 must divide .* 16 x 4 = 64"),
        (["init=resnet"], "scratch"),
        (["arch=vgg"], "unknown architecture"),
        (["embedding_dim=100"], "64, 128, 256, 512"),
        (["train_folds=[1, 10]"], "holdout_fold=10 is also in train_folds"),
        (["init=scratch", "freeze_trunk=true"], "random trunk"),
        (["augment.jpeg_quality=[90, 10]"], "low=90 high=10"),
        (["mining=hard"], "mining"),
        (["learning_rate=0.1"], "learning_rate: unknown key"),
        ([], "data: Field required"),
    ],
)
def test_invalid_configs(overrides: list[str], message: str) -> None:
    data = [] if not overrides else ["data=/tmp/x"]
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, data + overrides)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "nope.yaml"], "does not exist"),
        (["--config", str(ROOT / "configs/train/nns2-scratch.yaml"), "--workers", "3"], "num_workers=3"),
        (["--config", str(ROOT / "configs/train/nns2-scratch.yaml"), "--set", "mining=best"], "mining"),
    ],
)
def test_cli_validates_before_anything_starts(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from streamproc.cli import main

    assert main(["train", *argv]) == 2
    assert message in capsys.readouterr().err
