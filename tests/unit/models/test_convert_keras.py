"""The Keras HDF5 converter: on a file this test writes itself, and on the real weights when cached."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from streamproc.errors import ConversionError
from streamproc.models.convert_keras import convert
from streamproc.models.inception_resnet_v1 import InceptionResnetV1

# Keras layer names written out by hand (independently of the converter's rules).
STEM = [("Conv2d_1a_3x3", "stem.0"), ("Conv2d_2a_3x3", "stem.1"), ("Conv2d_2b_3x3", "stem.2"),
        ("Conv2d_3b_1x1", "stem.4"), ("Conv2d_4a_3x3", "stem.5"), ("Conv2d_4b_3x3", "stem.6")]  # fmt: skip
BRANCHES = {
    "Block35": [["1x1"], ["0a_1x1", "0b_3x3"], ["0a_1x1", "0b_3x3", "0c_3x3"]],
    "Block17": [["1x1"], ["0a_1x1", "0b_1x7", "0c_7x1"]],
    "Block8": [["1x1"], ["0a_1x1", "0b_1x3", "0c_3x1"]],
    "Mixed_6a": [["1a_3x3"], ["0a_1x1", "0b_3x3", "1a_3x3"]],
    "Mixed_7a": [["0a_1x1", "1a_3x3"], ["0a_1x1", "1a_3x3"], ["0a_1x1", "0b_3x3", "1a_3x3"]],
}
SCALES = {"Block35": 0.17, "Block17": 0.1, "Block8": 0.2}


def keras_layout() -> list[tuple[str, str, str]]:
    """(keras name, class, our module path) for every weighted layer."""
    rows = [(k, "Conv2D", p) for k, p in STEM]
    blocks = [(f"Block35_{i}", f"repeat_1.{i - 1}") for i in range(1, 6)]
    blocks += [("Mixed_6a", "mixed_6a")]
    blocks += [(f"Block17_{i}", f"repeat_2.{i - 1}") for i in range(1, 11)]
    blocks += [("Mixed_7a", "mixed_7a")]
    blocks += [(f"Block8_{i}", f"repeat_3.{i - 1}") for i in range(1, 6)] + [("Block8_6", "block8")]
    for keras, path in blocks:
        kind = keras if keras.startswith("Mixed") else keras.split("_")[0]
        for b, tags in enumerate(BRANCHES[kind]):
            rows += [
                (f"{keras}_Branch_{b}_Conv2d_{t}", "Conv2D", f"{path}.branches.{b}.{n}")
                for n, t in enumerate(tags)
            ]
        if not keras.startswith("Mixed"):
            rows.append((f"{keras}_Conv2d_1x1", "Conv2D", f"{path}.conv"))
    rows.append(("Bottleneck", "Dense", "bottleneck"))
    return rows


def write_keras_file(path: Path, model: InceptionResnetV1, *, break_layer: str | None = None) -> None:
    state = model.state_dict()
    layers, weights = [], {}
    for keras, kind, torch_path in keras_layout():
        has_bn = kind == "Conv2D" and not torch_path.endswith(".conv")
        conv = torch_path if torch_path.endswith(".conv") or kind == "Dense" else f"{torch_path}.conv"
        w = state[f"{conv}.weight"].numpy()
        kernel = w.T if kind == "Dense" else w.transpose(2, 3, 1, 0)
        if keras == break_layer:
            kernel = kernel[..., :-1]
        weights[keras] = {"kernel:0": kernel}
        if f"{conv}.bias" in state:
            weights[keras]["bias:0"] = state[f"{conv}.bias"].numpy()
        layers.append({"class_name": kind, "name": keras, "config": {}})
        bn = f"{torch_path}.bn" if has_bn else ("bottleneck_bn" if kind == "Dense" else None)
        if bn:
            weights[f"{keras}_BatchNorm"] = {
                "beta:0": state[f"{bn}.bias"].numpy(),
                "moving_mean:0": state[f"{bn}.running_mean"].numpy(),
                "moving_variance:0": state[f"{bn}.running_var"].numpy(),
            }
            layers.append({"class_name": "BatchNormalization", "name": f"{keras}_BatchNorm", "config": {}})
    for keras in {k.rsplit("_Branch", 1)[0] for k, _, _ in keras_layout() if k.startswith("Block")}:
        scale = 1.0 if keras == "Block8_6" else SCALES[keras.split("_")[0]]
        layers.append(
            {"class_name": "Lambda", "name": f"{keras}_ScaleSum", "config": {"arguments": {"scale": scale}}}
        )
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": layers}})
        group = h5.create_group("model_weights")
        for layer, arrays in weights.items():
            g = group.create_group(layer)
            g.attrs["weight_names"] = [f"{layer}/{n}".encode() for n in arrays]
            for n, a in arrays.items():
                g[f"{layer}/{n}"] = a


@pytest.fixture(scope="module")
def random_model() -> InceptionResnetV1:
    torch.manual_seed(0)
    model = InceptionResnetV1(embedding_dim=128)
    with torch.no_grad():  # non-trivial batch-norm statistics, so a swapped tensor shows
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.endswith("bn.bias"):
                p.normal_(0, 0.1)
    return model.eval()


def test_round_trip_gives_identical_embeddings(tmp_path: Path, random_model: InceptionResnetV1) -> None:
    path = tmp_path / "model.h5"
    write_keras_file(path, random_model)
    converted = convert(path)
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        np.testing.assert_allclose(converted(x).numpy(), random_model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        ("shape", "expects shape"),
        ("no_config", "no model_config"),
        ("not_hdf5", "not a readable HDF5"),
    ],
)
def test_bad_files_raise_conversion_error(
    tmp_path: Path, random_model: InceptionResnetV1, mutate: str, message: str
) -> None:
    path = tmp_path / "bad.h5"
    if mutate == "not_hdf5":
        path.write_bytes(b"this is not hdf5")
    else:
        write_keras_file(
            path, random_model, break_layer="Block17_3_Branch_1_Conv2d_0b_1x7" if mutate == "shape" else None
        )
        if mutate == "no_config":
            with h5py.File(path, "a") as h5:
                del h5.attrs["model_config"]
    with pytest.raises(ConversionError, match=message):
        convert(path)


def test_real_weights_separate_people(facenet_keras_h5: Path, lfw_dir: Path) -> None:
    """The real converted model: same person close, different people far (centre crops of LFW)."""
    import cv2

    model = convert(facenet_keras_h5)

    def crop(name: str, index: int) -> np.ndarray:
        path = lfw_dir / "lfw-deepfunneled" / name / f"{name}_{index:04d}.jpg"
        image = cv2.imread(str(path))[:, :, ::-1][70:180, 70:180]
        x = cv2.resize(image, (160, 160)).astype(np.float32)
        return (x - x.mean()) / x.std()

    images = [
        crop("Aaron_Peirsol", 1),
        crop("Aaron_Peirsol", 2),
        crop("Abel_Pacheco", 1),
        crop("Abel_Pacheco", 4),
    ]
    with torch.no_grad():
        emb = model(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)).numpy()
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    assert d[0, 1] < 1.0 and d[2, 3] < 1.0
    assert min(d[0, 2], d[0, 3], d[1, 2], d[1, 3]) > 1.2
