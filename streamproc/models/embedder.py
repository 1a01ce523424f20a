"""Turn aligned face crops into L2-normalised embeddings, in batches.

Example:
    >>> emb = Embedder.from_model(InceptionResnetV1().eval(), ModelCard(
    ...     name="x", version="v0", arch="inception_resnet_v1", embedding_dim=128, input_size=160))
    >>> emb(np.zeros((2, 160, 160, 3), np.uint8)).shape
    (2, 128)
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from streamproc.align import adapt_crops
from streamproc.config import EmbedderConfig
from streamproc.errors import InputError
from streamproc.models import registry
from streamproc.models.checkpoint import ModelCard
from streamproc.models.inception_resnet_v1 import InceptionResnetV1
from streamproc.types import Crops

__all__ = ["Embedder", "InceptionResnetV1", "ModelCard", "preprocess"]


def preprocess(crops: np.ndarray, card: ModelCard) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32 normalised as the model was trained."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).float().permute(0, 3, 1, 2)
    if card.normalisation == "prewhiten":
        flat = x.reshape(len(x), -1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        floor = 1.0 / np.sqrt(flat.shape[1])
        std = flat.std(dim=1, unbiased=False).clamp_min(floor).view(-1, 1, 1, 1)
        return (x - mean) / std
    return (x - card.mean) / card.std


class Embedder:
    """A loaded model plus its card; ``__call__(crops) -> (N, D)`` float32 unit rows."""

    def __init__(self, config: EmbedderConfig | None = None):
        self.config = config or EmbedderConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.model, self.card = registry.load(self.config.model, device=self.config.device)

    @classmethod
    def from_model(cls, model: nn.Module, card: ModelCard, config: EmbedderConfig | None = None) -> Embedder:
        self = cls.__new__(cls)
        self.config = config or EmbedderConfig()
        self.model, self.card = model.eval(), card
        return self

    @property
    def version(self) -> str:
        return self.card.version

    def __call__(self, crops: np.ndarray | Crops) -> np.ndarray:
        """(N, D) unit rows for pipeline crops: an array (resized) or ``Crops`` (adapted to the card)."""
        if isinstance(crops, Crops):
            crops = adapt_crops(crops.images, crops.points, self.card.alignment, self.card.input_size)
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise InputError(f"expected (N, S, S, 3) uint8 face crops, got {crops.shape} {crops.dtype}")
        size = self.card.input_size
        if crops.shape[1:3] != (size, size):
            crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
        out = np.zeros((len(crops), self.card.embedding_dim), np.float32)
        step = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(crops), step):
                batch = preprocess(crops[start : start + step], self.card).to(self.config.device)
                out[start : start + step] = self.model(batch).float().cpu().numpy()
        return out
