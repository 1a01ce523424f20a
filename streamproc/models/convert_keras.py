"""Convert FaceNet's Keras 2 HDF5 weights into our ``InceptionResnetV1`` (h5py only).

Every Keras layer name is mapped to one of our module paths by rule, every array is
checked against the shape our module expects, and every tensor of our model must be
filled exactly once; anything else is a ``ConversionError`` naming the layer.

Keras to ours:
    Conv2d_1a_3x3 ... Conv2d_4b_3x3          stem.{0,1,2,4,5,6}
    Block35_i / Block17_i / Block8_i (i<=5)   repeat_{1,2,3}.{i-1}
    Block8_6                                  block8
    Mixed_6a / Mixed_7a                       mixed_6a / mixed_7a
    <block>_Branch_b_Conv2d_<tag>             <block>.branches.b.<n>, n = rank of <tag> in its branch
    <block>_Conv2d_1x1                        <block>.conv (with bias)
    Bottleneck, Bottleneck_BatchNorm          bottleneck, bottleneck_bn
Keras kernels are (kh, kw, in, out) and dense weights (in, out); ours are (out, in, kh, kw) and (out, in).

Example:
    >>> keras_to_path("Block17_3_Branch_1_Conv2d_0b_1x7", {"Block17_3_Branch_1": ["0a_1x1", "0b_1x7", "0c_7x1"]})
    'repeat_2.2.branches.1.1'
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import torch

from streamproc.errors import ConversionError
from streamproc.models.inception_resnet_v1 import InceptionResnetV1

_STEM = {
    "Conv2d_1a_3x3": "stem.0",
    "Conv2d_2a_3x3": "stem.1",
    "Conv2d_2b_3x3": "stem.2",
    "Conv2d_3b_1x1": "stem.4",
    "Conv2d_4a_3x3": "stem.5",
    "Conv2d_4b_3x3": "stem.6",
}
_HEAD = {"Bottleneck": "bottleneck"}
_BRANCH = re.compile(r"^(?P<block>(Block(35|17|8)_\d+|Mixed_[67]a))_Branch_(?P<b>\d)_Conv2d_(?P<tag>\w+)$")
_PROJ = re.compile(r"^(?P<block>Block(35|17|8)_\d+)_Conv2d_1x1$")
_EXPECTED_SCALES = {"Block35": 0.17, "Block17": 0.1, "Block8": 0.2}


def _block_path(block: str) -> str:
    if block.startswith("Mixed_"):
        return block.lower()
    kind, index = block.rsplit("_", 1)
    if block == "Block8_6":
        return "block8"
    repeat = {"Block35": 1, "Block17": 2, "Block8": 3}[kind]
    return f"repeat_{repeat}.{int(index) - 1}"


def keras_to_path(name: str, branch_tags: dict[str, list[str]]) -> str:
    """Our module path for a Keras conv/dense/batch-norm layer name (without the _BatchNorm suffix)."""
    if name in _STEM:
        return _STEM[name]
    if name in _HEAD:
        return _HEAD[name]
    if m := _PROJ.match(name):
        return f"{_block_path(m['block'])}.conv"
    if m := _BRANCH.match(name):
        key = f"{m['block']}_Branch_{m['b']}"
        rank = sorted(branch_tags[key]).index(m["tag"])
        return f"{_block_path(m['block'])}.branches.{m['b']}.{rank}"
    raise ConversionError(f"Keras layer {name!r} has no counterpart in InceptionResnetV1")


def _layer_config(h5: h5py.File) -> list[dict]:
    raw = h5.attrs.get("model_config")
    if raw is None:
        raise ConversionError("HDF5 file has no model_config attribute: not a Keras 2 full-model file")
    return list(json.loads(raw if isinstance(raw, str) else raw.decode())["config"]["layers"])


def _check_scales(layers: list[dict]) -> None:
    for layer in layers:
        if layer["class_name"] != "Lambda" or not layer["name"].endswith("_ScaleSum"):
            continue
        kind = layer["name"].split("_")[0]
        got = layer["config"].get("arguments", {}).get("scale")
        want = 1.0 if layer["name"] == "Block8_6_ScaleSum" else _EXPECTED_SCALES[kind]
        if got is None or abs(got - want) > 1e-6:
            raise ConversionError(f"{layer['name']}: residual scale {got}, our architecture uses {want}")


def _weights(h5: h5py.File, layer: str) -> dict[str, np.ndarray]:
    group = h5["model_weights"][layer]
    out = {}
    for raw in group.attrs["weight_names"]:
        wname = raw.decode() if isinstance(raw, bytes) else raw
        out[wname.split("/")[-1].split(":")[0]] = np.asarray(group[wname])
    return out


def _put(state: dict[str, torch.Tensor], filled: set[str], key: str, value: np.ndarray, layer: str) -> None:
    if key not in state:
        raise ConversionError(f"{layer}: our model has no tensor {key}")
    if tuple(state[key].shape) != value.shape:
        raise ConversionError(
            f"{layer}: {key} expects shape {tuple(state[key].shape)}, Keras has {value.shape}"
        )
    if key in filled:
        raise ConversionError(f"{layer}: {key} filled twice")
    state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    filled.add(key)


def _convert_layer(layer: dict, w: dict[str, np.ndarray], path: str, state: dict, filled: set[str]) -> None:
    name, kind = layer["name"], layer["class_name"]
    if kind == "Conv2D":
        prefix = path if path.endswith(".conv") else f"{path}.conv"
        _put(state, filled, f"{prefix}.weight", w["kernel"].transpose(3, 2, 0, 1), name)
        if "bias" in w:
            _put(state, filled, f"{prefix}.bias", w["bias"], name)
    elif kind == "Dense":
        _put(state, filled, f"{path}.weight", w["kernel"].T, name)
    elif kind == "BatchNormalization":
        prefix = "bottleneck_bn" if path == "bottleneck" else f"{path}.bn"
        _put(state, filled, f"{prefix}.bias", w["beta"], name)
        _put(state, filled, f"{prefix}.running_mean", w["moving_mean"], name)
        _put(state, filled, f"{prefix}.running_var", w["moving_variance"], name)
        if "gamma" in w:
            _put(state, filled, f"{prefix}.weight", w["gamma"], name)
    else:
        raise ConversionError(f"{name}: unexpected weighted layer type {kind}")


def convert(h5_path: Path, embedding_dim: int = 128) -> InceptionResnetV1:
    """Build an ``InceptionResnetV1`` holding the Keras file's weights (in eval mode)."""
    model = InceptionResnetV1(embedding_dim=embedding_dim)
    state = dict(model.state_dict())
    filled: set[str] = set()
    try:
        h5 = h5py.File(h5_path, "r")
    except OSError as exc:
        raise ConversionError(f"{h5_path}: not a readable HDF5 file ({exc})") from exc
    with h5:
        layers = _layer_config(h5)
        _check_scales(layers)
        branch_tags: dict[str, list[str]] = {}
        for layer in layers:
            if layer["class_name"] == "Conv2D" and (m := _BRANCH.match(layer["name"])):
                branch_tags.setdefault(f"{m['block']}_Branch_{m['b']}", []).append(m["tag"])
        for layer in layers:
            w = _weights(h5, layer["name"]) if layer["name"] in h5["model_weights"] else {}
            if not w:
                continue
            base = layer["name"].removesuffix("_BatchNorm")
            _convert_layer(layer, w, keras_to_path(base, branch_tags), state, filled)
    # Our BN scales are fixed at 1 (Keras scale=False); batch counters are not weights.
    unfilled = [k for k in state if k not in filled and not k.endswith((".num_batches_tracked", "bn.weight"))]
    if unfilled:
        raise ConversionError(f"{len(unfilled)} tensors got no Keras weights, e.g. {unfilled[:3]}")
    model.load_state_dict(state)
    return model.eval()
