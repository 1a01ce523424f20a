"""A few steps of ``train()`` on a handful of LFW people: a checkpoint that rebuilds the model alone,
a registry entry that loads, and a rerun with more epochs that resumes from the last checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamproc.models import registry
from streamproc.models.checkpoint import load_checkpoint
from streamproc.training.config import TrainConfig, load_train_config
from streamproc.training.launch import train

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def small_config(lfw_dir: Path, tmp: Path, *extra: str) -> TrainConfig:
    return load_train_config(
        ROOT / "configs" / "train" / "nns2-scratch.yaml",
        [
            f"data={lfw_dir / 'lfw-deepfunneled'}",
            "name=smoke-nns2",
            "max_identities=8",
            "max_images_per_identity=4",
            "holdout_max_pairs=20",
            "identities_per_batch=4",
            "images_per_identity=2",
            "epochs=1",
            "steps_per_epoch=2",
            "num_workers=2",
            "progress=false",
            f"crops_cache={tmp / 'crops'}",
            f"output={tmp / 'out'}",
            *extra,
        ],
    )


def test_train_checkpoint_registry_and_resume(
    lfw_dir: Path,
    mtcnn_weights_dir: Path,
    ray_cluster: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "models_dir", lambda: tmp_path / "models")
    result = train(small_config(lfw_dir, tmp_path))
    assert result.metrics["epoch"] == 0
    assert 0.0 <= result.metrics["holdout_accuracy"] <= 1.0
    assert "initial_holdout_accuracy" in result.metrics and result.metrics["holdout_pairs"] == 20

    with result.checkpoint.as_directory() as folder:
        model, card = load_checkpoint(Path(folder) / "model.pt")
        assert {p.name for p in Path(folder).iterdir()} >= {"model.pt", "state.pt", "config.json"}
    assert (card.name, card.version, card.arch, card.input_size, card.parent) == (
        "smoke-nns2",
        "s1",
        "nns2",
        140,
        None,
    )
    assert card.thresholds["s1"] == pytest.approx(result.metrics["holdout_threshold"])
    assert card.provenance["config"]["arch"] == "nns2" and card.metrics["epoch"] == 0
    out = model(torch.zeros(2, 3, 140, 140))
    assert out.shape == (2, 128)

    loaded, loaded_card = registry.load("smoke-nns2")
    assert loaded_card == card
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )

    resumed = train(small_config(lfw_dir, tmp_path, "epochs=2"))
    assert resumed.metrics["epoch"] == 1
    assert resumed.metrics["initial_holdout_accuracy"] == result.metrics["initial_holdout_accuracy"]
    assert registry.card("smoke-nns2").metrics["epoch"] == 1
