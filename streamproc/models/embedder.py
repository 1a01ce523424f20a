"""Turn aligned face crops into L2-normalised embeddings, in batches.

Crops travel to the device as uint8 (a quarter of float32's bytes; pinned memory and a
non-blocking copy on CUDA) and are normalised there. On CUDA the model runs under autocast
(``embedder.precision``: bfloat16 where the GPU has it, else float16), and the rows are normalised
again in float32; every other device runs float32 throughout. CUDA and CPU run the model in
channels_last layout: on one CPU core here Inception-ResNet-v1 took 44-53 ms a face against 60-73
ms in NCHW (passes of 64 and 8, two sessions), with rows equal within 3e-7; MobileFaceNet gained
in one session (9.5-16 against 10-20 ms) and not in the next (9.0-15.6 against 9.1-15.1).

With ``embedder.flip`` (off by default) each crop is also run mirrored and the two rows are
averaged (test-time augmentation): one model pass of twice the faces. Against 1,680 LFW people it
raised the stills detect-and-identify rate at FPIR 1% from 0.7727 to 0.8122 (607 probe photos,
``bench/video_identification.py``) but lowered LFW 10-fold verification from 0.9940 to 0.9930, and
it doubles the embedding cost (README, "Verification on LFW").

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
import torch.nn.functional as F
from torch import nn

from streamproc.align import adapt_crops
from streamproc.config import EmbedderConfig
from streamproc.errors import InputError
from streamproc.models import registry
from streamproc.models.checkpoint import ModelCard
from streamproc.models.inception_resnet_v1 import InceptionResnetV1
from streamproc.types import Crops

__all__ = ["Embedder", "InceptionResnetV1", "ModelCard", "autocast_dtype", "normalise", "preprocess"]

AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def normalise(pixels: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB on any device -> (N, 3, S, S) float32 there, normalised as trained."""
    x = pixels.permute(0, 3, 1, 2).float()
    if card.normalisation == "prewhiten":
        flat = x.reshape(len(x), -1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        floor = 1.0 / np.sqrt(flat.shape[1])
        std = flat.std(dim=1, unbiased=False).clamp_min(floor).view(-1, 1, 1, 1)
        return (x - mean) / std
    return (x - card.mean) / card.std


def preprocess(crops: np.ndarray, card: ModelCard) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32 normalised as the model was trained (on CPU)."""
    return normalise(torch.from_numpy(np.ascontiguousarray(crops)), card)


def to_device(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 crops on ``device``: through pinned memory and a non-blocking copy on CUDA."""
    pixels = torch.from_numpy(np.ascontiguousarray(crops))
    if device.type != "cuda":
        return pixels.to(device)
    return pixels.pin_memory().to(device, non_blocking=True)


def autocast_dtype(device: torch.device, precision: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None = float32 (every non-CUDA device)."""
    if device.type != "cuda" or precision == "float32":
        return None
    if precision == "auto":
        return torch.bfloat16 if bf16_supported else torch.float16
    return AUTOCAST[precision]


class Embedder:
    """A loaded model plus its card; ``__call__(crops) -> (N, D)`` float32 unit rows."""

    def __init__(self, config: EmbedderConfig | None = None):
        self.config = config or EmbedderConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        model, self.card = registry.load(self.config.model, device=self.config.device)
        self._place(model)

    @classmethod
    def from_model(cls, model: nn.Module, card: ModelCard, config: EmbedderConfig | None = None) -> Embedder:
        self = cls.__new__(cls)
        self.config = config or EmbedderConfig()
        self.card = card
        self._place(model.to(self.config.device))
        return self

    def _place(self, model: nn.Module) -> None:
        self.device = torch.device(self.config.device)
        cuda = self.device.type == "cuda"
        self.autocast = autocast_dtype(
            self.device, self.config.precision, cuda and torch.cuda.is_bf16_supported()
        )
        self.channels_last = self.device.type in ("cuda", "cpu")
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model.eval()

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
                out[start : start + step] = self._forward(crops[start : start + step])
        return out

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        x = normalise(to_device(crops, self.device), self.card)
        if self.config.flip:
            x = torch.cat([x, x.flip(3)])  # NCHW: mirrored left to right
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast is None:
            rows = self.model(x).float()
        else:
            with torch.autocast(self.device.type, dtype=self.autocast):
                rows = self.model(x).float()
        if self.config.flip:
            rows = rows[: len(crops)] + rows[len(crops) :]
        return F.normalize(rows, dim=1).cpu().numpy()
