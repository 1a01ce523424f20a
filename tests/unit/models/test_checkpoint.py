"""Checkpoints rebuild the model from the file alone; registry entries round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamproc.errors import ModelError
from streamproc.models import registry
from streamproc.models.checkpoint import ModelCard, load_checkpoint, read_card, save_checkpoint
from streamproc.models.inception_resnet_v1 import InceptionResnetV1

CARD = ModelCard(
    name="tiny", version="v9", arch="inception_resnet_v1", embedding_dim=64, input_size=160,
    thresholds={"v9": 0.9}, compatible_with=("v9",), provenance={"why": "test"},
)  # fmt: skip


def test_round_trip(tmp_path: Path) -> None:
    model = InceptionResnetV1(embedding_dim=64).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, CARD)
    loaded, card = load_checkpoint(path)
    assert card == CARD and card.threshold_for("v9") == 0.9
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"garbage", "cannot be read"), ({"format": "other"}, "is not a streamproc")],
)
def test_bad_checkpoints(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(path)


def test_missing_threshold_names_known_ones() -> None:
    with pytest.raises(ModelError, match=r"known: \['v9'\]"):
        CARD.threshold_for("v1")


def test_registry_register_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_CACHE_DIR", str(tmp_path))
    path = save_checkpoint(tmp_path / "trained.pt", InceptionResnetV1(embedding_dim=64), CARD)
    registry.register("tiny", path)
    assert "tiny" in registry.names() and registry.is_materialised("tiny")
    assert read_card(registry.checkpoint_path("tiny")).version == "v9"
    with pytest.raises(ModelError, match="unknown model"):
        registry.checkpoint_path("missing")


def invert_middle(path: Path, size: int) -> None:
    """Invert ``size`` bytes in the middle of a file, as a bad disk or a bad copy would."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start : start + size] = bytes(255 - b for b in data[start : start + size])
    path.write_bytes(bytes(data))


def test_a_corrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", InceptionResnetV1(embedding_dim=64), CARD)
    load_checkpoint(path)
    invert_middle(path, 4096)
    for load in (load_checkpoint, read_card):
        with pytest.raises(ModelError, match=r"m\.pt is corrupt \(its sha256 differs") as info:
            load(path)
        assert "\n" not in str(info.value)


def test_a_corrupt_builtin_is_not_ready_and_models_fetch_makes_it_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    facenet_keras_h5: Path,
    mtcnn_weights_dir: Path,
    tflite_path: Path,
    celebrity_dir: Path,
) -> None:
    from streamproc.cli import main
    from streamproc.models import fetch

    real = {name: fetch.artifact_dir(name) for name in fetch.ARTIFACTS}
    monkeypatch.setenv("STREAMPROC_CACHE_DIR", str(tmp_path))
    for name, folder in real.items():  # the fetched weights, without downloading them again
        (tmp_path / "weights").mkdir(exist_ok=True)
        (tmp_path / "weights" / name).symlink_to(folder)
    name = registry.DEFAULT_MODEL
    invert_middle(registry.checkpoint_path(name), 4096)

    assert main(["models", "list"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith(name))
    assert "[ready]" not in line and "is corrupt" in line and f"models fetch {name}" in line, line
    with pytest.raises(ModelError, match=f"is corrupt .*run `streamproc models fetch {name}`"):
        registry.load(name)

    assert main(["models", "fetch", name]) == 0
    assert f"{name}@v1 ok" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith(name))
    assert "[ready]" in line, line
