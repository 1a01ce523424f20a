"""The embedder's device path: uint8 crops go to the device and are normalised there.

On CPU the path must give what the paper's preprocessing gives (per-image prewhitening computed
here in float64 numpy, or the fixed (x - 127.5) / 128), then the model, on real LFW faces with
the real weights. Autocast (bf16/fp16) is for CUDA only: CPU stays float32. The product runs the
model in channels_last layout on CPU (faster there); the reference runs a copy in the plain NCHW
layout, so a layout that changed the numbers would fail.
"""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamproc.config import EmbedderConfig
from streamproc.models.embedder import Embedder, autocast_dtype

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def lfw_crops(lfw_dir: Path) -> np.ndarray:
    """Twelve LFW faces: the central 160x160 of the 250x250 deep-funneled photos."""
    people = sorted((lfw_dir / "lfw-deepfunneled").iterdir())[::300][:12]
    crops = []
    for person in people:
        bgr = cv2.imread(str(sorted(person.glob("*.jpg"))[0]))
        crops.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[45:205, 45:205])
    return np.stack(crops)


def reference(embedder: Embedder, crops: np.ndarray) -> np.ndarray:
    """The model on inputs normalised in float64 numpy, as FaceNet's prewhiten did."""
    card = embedder.card
    size = card.input_size
    x = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    x = x.astype(np.float64)
    if card.normalisation == "prewhiten":
        flat = x.reshape(len(x), -1)
        std = np.maximum(flat.std(axis=1), 1.0 / np.sqrt(flat.shape[1]))
        x = (x - flat.mean(axis=1)[:, None, None, None]) / std[:, None, None, None]
    else:
        x = (x - card.mean) / card.std
    tensor = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    model = copy.deepcopy(embedder.model).cpu().to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        return model(tensor).numpy()


@pytest.mark.parametrize("model", ["facenet-irv1-128", "mobilefacenet-192"])
def test_cpu_path_equals_the_reference_preprocessing(model, lfw_crops):
    torch.set_num_threads(1)
    embedder = Embedder(EmbedderConfig(model=model, batch_size=5, flip=False))  # batches of 5, 5, 2
    assert embedder.autocast is None  # CPU keeps float32
    conv = next(m for m in embedder.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    got = embedder(lfw_crops)
    want = reference(embedder, lfw_crops)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_flip_averages_each_face_with_its_mirror_image(lfw_crops):
    """A face and its mirror image get the same row: the mean of the two plain rows, normalised."""
    torch.set_num_threads(1)
    embedder = Embedder(EmbedderConfig(batch_size=5, flip=True))
    mirrored = np.ascontiguousarray(lfw_crops[:, :, ::-1])
    got, got_mirrored = embedder(lfw_crops), embedder(mirrored)
    np.testing.assert_allclose(got, got_mirrored, atol=2e-5)
    both = reference(embedder, lfw_crops) + reference(embedder, mirrored)
    np.testing.assert_allclose(got, both / np.linalg.norm(both, axis=1, keepdims=True), atol=2e-5)
    plain = reference(embedder, lfw_crops)
    assert np.abs(got - plain).max() > 0.01  # mirroring changes the row: a real face is not symmetric


@pytest.mark.parametrize(
    ("device", "precision", "bf16_supported", "expected"),
    [
        ("cpu", "auto", True, None),
        ("cpu", "bfloat16", True, None),  # CPU keeps float32 whatever is asked
        ("cuda", "auto", True, torch.bfloat16),
        ("cuda", "auto", False, torch.float16),
        ("cuda:1", "float16", True, torch.float16),
        ("cuda", "float32", True, None),
    ],
)
def test_autocast_only_on_cuda(device, precision, bf16_supported, expected):
    assert autocast_dtype(torch.device(device), precision, bf16_supported) == expected


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_cuda_path_matches_cpu(precision, lfw_crops):
    cpu = Embedder(EmbedderConfig())(lfw_crops)
    gpu = Embedder(EmbedderConfig(device="cuda", precision=precision))(lfw_crops)
    cosine = np.sum(cpu * gpu, axis=1)
    assert cosine.min() > (0.9999 if precision == "float32" else 0.999), cosine
