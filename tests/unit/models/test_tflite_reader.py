"""The TFLite reader: bad files are ModelErrors, the real MobileFaceNet file parses to its known graph."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from streamproc.errors import ModelError
from streamproc.models.tflite import TfliteModel, read_tflite

MOBILEFACENET_BYTES = 5_233_396


@pytest.fixture(scope="module")
def model(tflite_path: Path) -> TfliteModel:
    return read_tflite(tflite_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "expected the file identifier b'TFL3'"),
        (np.random.default_rng(0).bytes(4096), "expected the file identifier b'TFL3'"),
        (b"\x18\x00\x00\x00TFL3", "outside the 8-byte file"),
        (b"\xff\xff\xff\x7fTFL3" + bytes(64), "outside the 72-byte file"),
        (b"\x08\x00\x00\x00TFL3" + b"\x00\x01\x00\x00" * 16, "not a valid TFLite model"),
    ],
    ids=["empty", "random", "header-only", "root-past-end", "bad-vtable"],
)
def test_bad_files_are_model_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        read_tflite(path)


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read the TFLite file"):
        read_tflite(tmp_path / "nope.tflite")


@pytest.mark.parametrize("keep", [8, 30, 1000, 100_000, MOBILEFACENET_BYTES // 2, MOBILEFACENET_BYTES - 10])
def test_truncated_real_file_is_a_model_error(tflite_path: Path, tmp_path: Path, keep: int) -> None:
    path = tmp_path / "cut.tflite"
    path.write_bytes(tflite_path.read_bytes()[:keep])
    with pytest.raises(ModelError, match="truncated"):
        read_tflite(path)


def test_real_file_graph(model: TfliteModel) -> None:
    counts = Counter(op.opcode for op in model.operators)
    assert counts == {
        "CONV_2D": 35,
        "DEPTHWISE_CONV_2D": 17,
        "RELU": 33,  # 33 PReLUs, each relu(x) + c * (x - |x|)
        "ABS": 33,
        "SUB": 33,
        "MUL": 33,
        "ADD": 45,  # 33 PReLUs + 12 residual adds
        "RESHAPE": 1,
    }
    (inp,), (out,) = model.inputs, model.outputs
    assert (model.tensors[inp].name, model.tensors[inp].shape) == ("input", (2, 112, 112, 3))
    assert (model.tensors[out].name, model.tensors[out].shape) == ("embeddings", (2, 192))
    assert model.tensors[inp].dtype == np.float32 and model.tensors[inp].data is None
    assert model.description == "TOCO Converted." and model.version == 3


def test_real_file_weights_and_options(model: TfliteModel) -> None:
    weights = [t for t in model.tensors if t.data is not None and t.dtype == np.float32]
    assert sum(t.data.size for t in weights if t.data is not None) == 1_292_992
    assert all(t.data is not None and t.data.shape == t.shape for t in weights)
    first = model.operators[0]
    assert first.opcode == "CONV_2D" and model.tensors[first.inputs[1]].shape == (64, 3, 3, 3)
    assert first.options == {
        "padding": "SAME",
        "stride_w": 2,
        "stride_h": 2,
        "fused_activation_function": "NONE",
        "dilation_w_factor": 1,
        "dilation_h_factor": 1,
    }
    gdconv = model.operators[-4]
    assert gdconv.opcode == "DEPTHWISE_CONV_2D" and gdconv.options["padding"] == "VALID"
    assert gdconv.options["depth_multiplier"] == 1
    assert model.operators[-1].options == {"new_shape": [2, 192]}
    assert model.operators[-1].opcode == "RESHAPE"
    assert model.operators[4].opcode == "MUL" and model.operators[4].options == {
        "fused_activation_function": "NONE"
    }


def test_matches_the_reference_interpreter(model: TfliteModel, tflite_path: Path) -> None:
    """Every tensor's name, shape and constant data agree with what LiteRT itself reads."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_path=str(tflite_path), num_threads=1)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    assert len(details) == len(model.tensors)
    for tensor in model.tensors:
        ref = details[tensor.index]
        assert (ref["name"], tuple(ref["shape"])) == (tensor.name, tensor.shape)
        assert np.dtype(ref["dtype"]) == tensor.dtype
    for tensor in model.tensors[:5]:  # constants are readable before allocation
        assert tensor.data is not None
        np.testing.assert_array_equal(interpreter.get_tensor(tensor.index), tensor.data)
