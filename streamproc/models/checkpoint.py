"""Self-describing checkpoints: a model is rebuilt from its file alone.

The file is a plain dict saved with ``torch.save`` and read with ``weights_only=True``:
``{"format": FORMAT, "card": ModelCard fields, "state_dict": ...}``.

Example:
    >>> card = ModelCard(name="demo", version="v0", arch="nns2", embedding_dim=64, input_size=140)
    >>> card.key
    'demo@v0'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamproc.errors import ModelError

FORMAT = "streamproc-checkpoint/1"


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild, feed and trust a model."""

    name: str
    version: str
    arch: str
    embedding_dim: int
    input_size: int
    normalisation: str = "prewhiten"  # per-image standardisation; or "fixed": (x - mean) / std
    mean: float = 127.5
    std: float = 128.0
    alignment: str = "crop"  # how pipeline crops become its input: "crop" (resize) or "similarity" (warp)
    compatible_with: tuple[str, ...] = ()  # versions whose embeddings ours may be compared with
    thresholds: dict[str, float] = field(default_factory=dict)  # gallery version -> squared-L2 threshold
    # the 1:1 impostor curve of this version against itself: FAR ("1e-3") -> squared-L2 threshold;
    # sets open-set thresholds of galleries not calibrated yet (streamproc.gallery.calibrate)
    far_thresholds: dict[str, float] = field(default_factory=dict)
    parent: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def threshold_for(self, gallery_version: str) -> float:
        if gallery_version not in self.thresholds:
            raise ModelError(
                f"{self.key} has no calibrated threshold against gallery version {gallery_version!r}; "
                f"known: {sorted(self.thresholds) or 'none'}"
            )
        return self.thresholds[gallery_version]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["compatible_with"] = list(self.compatible_with)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ModelError(
                f"model card has unknown fields {sorted(unknown)}: written by a newer streamproc?"
            )
        raw = dict(raw)
        raw["compatible_with"] = tuple(raw.get("compatible_with", ()))
        return cls(**raw)


def save_checkpoint(path: Path, model: nn.Module, card: ModelCard) -> Path:
    """Write atomically: a crash never leaves a half-written checkpoint under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "card": card.to_dict(), "state_dict": state}, tmp)
    tmp.replace(path)
    return path


def read_card(path: Path) -> ModelCard:
    return ModelCard.from_dict(_load_raw(path)["card"])


def _load_raw(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ModelError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelError(f"checkpoint {path} is not a {FORMAT} file")
    return raw


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model named by the card, load its weights strictly, return it in eval mode."""
    from streamproc.models.architectures import build

    raw = _load_raw(path)
    card = ModelCard.from_dict(raw["card"])
    model = build(card.arch, card.embedding_dim)
    try:
        model.load_state_dict(raw["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path} does not fit architecture {card.arch}: {exc}") from exc
    return model.to(device).eval(), card
