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
