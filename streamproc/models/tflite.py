"""Read a TensorFlow Lite model file (a FlatBuffer) with ``struct`` and numpy alone.

Only what a weight converter needs is decoded: the first subgraph's tensors (name, shape,
dtype, and the constant data of those that have a buffer), its operators (builtin name,
input and output tensor indices, and the options of common ops as a plain dict), and the
graph's inputs and outputs. Anything that does not look like a TFLite file, or whose
offsets point outside the file, is a ``ModelError``.

FlatBuffer layout in brief: a table starts with an int32 offset back to its vtable; the
vtable lists, per field, the field's byte offset inside the table (0 = absent, use the
default). References to tables, vectors and strings are uint32 offsets relative to the
place they are stored; a vector is a uint32 length followed by its elements.

    >>> model = read_tflite("MobileFaceNet.tflite")                 # doctest: +SKIP
    >>> model.tensors[model.inputs[0]].shape                          # doctest: +SKIP
    (2, 112, 112, 3)
    >>> model.operators[0].opcode, model.operators[0].options["stride_w"]  # doctest: +SKIP
    ('CONV_2D', 2)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamproc.errors import ModelError

FILE_IDENTIFIER = b"TFL3"

# BuiltinOperator codes 0..101, in schema order (codes past the table read as BUILTIN_<n>).
_OPCODE_NAMES = (
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE "
    "EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D "
    "LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 "
    "RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM "
    "CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND "
    "SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE "
    "BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM "
    "CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE "
    "SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW "
    "ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK "
    "REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR "
    "LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS"
)
_OPCODES = tuple(_OPCODE_NAMES.split())

_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_}
_DTYPES |= {7: np.int16, 9: np.int8, 10: np.float64}
_PADDING = ("SAME", "VALID")
_ACTIVATION = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

# Builtin option tables we decode: union type -> fields in schema order as (name, kind, default).
# Kinds: "pad"/"act" are int8 enums (decoded to names), "i8", "i32", "f32", "bool", "vi32".
_SPATIAL = [("padding", "pad", 0), ("stride_w", "i32", 0), ("stride_h", "i32", 0)]
_ACT = [("fused_activation_function", "act", 0)]
_DILATION = [("dilation_w_factor", "i32", 1), ("dilation_h_factor", "i32", 1)]
_OPTIONS: dict[int, list[tuple[str, str, Any]]] = {
    1: _SPATIAL + _ACT + _DILATION,  # Conv2DOptions
    2: [*_SPATIAL, ("depth_multiplier", "i32", 0), *_ACT, *_DILATION],  # DepthwiseConv2DOptions
    5: [*_SPATIAL, ("filter_width", "i32", 0), ("filter_height", "i32", 0), *_ACT],  # Pool2DOptions
    8: [*_ACT, ("weights_format", "i8", 0), ("keep_num_dims", "bool", False)],  # FullyConnectedOptions
    9: [("beta", "f32", 0.0)],  # SoftmaxOptions
    10: [("axis", "i32", 0), *_ACT],  # ConcatenationOptions
    11: _ACT,  # AddOptions
    17: [("new_shape", "vi32", [])],  # ReshapeOptions
    21: _ACT,  # MulOptions
    28: _ACT,  # SubOptions
}


@dataclass(frozen=True)
class Tensor:
    """One tensor of the graph; ``data`` holds its constant value (None for activations)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Operator:
    """One node: builtin name, tensor indices in and out (-1 = optional input left out), options."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any]


@dataclass(frozen=True)
class TfliteModel:
    """The first subgraph of a TFLite file, in execution order."""

    version: int
    description: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


class _Reader:
    """Bounds-checked FlatBuffer access over the file's bytes; errors name ``source``."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.source}: not a valid TFLite model ({what})")

    def scalar(self, fmt: str, pos: int) -> Any:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise self.fail(f"offset {pos} outside the {len(self.data)}-byte file; truncated?")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def deref(self, pos: int) -> int:
        return pos + self.scalar("I", pos)

    def field_pos(self, table: int, index: int) -> int | None:
        vtable = table - self.scalar("i", table)
        vt_size = self.scalar("H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        offset = self.scalar("H", vtable + slot)
        return table + offset if offset else None

    def get(self, table: int, index: int, fmt: str, default: Any) -> Any:
        pos = self.field_pos(table, index)
        return default if pos is None else self.scalar(fmt, pos)

    def table(self, table: int, index: int) -> int | None:
        pos = self.field_pos(table, index)
        return None if pos is None else self.deref(pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) for an absent vector."""
        pos = self.field_pos(table, index)
        if pos is None:
            return 0, 0
        start = self.deref(pos)
        length = self.scalar("I", start)
        return start + 4, length

    def tables(self, table: int, index: int) -> list[int]:
        start, length = self.vector(table, index)
        if start + 4 * length > len(self.data):
            raise self.fail(f"a vector of {length} tables runs past the end of the file; truncated?")
        return [self.deref(start + 4 * i) for i in range(length)]

    def array(self, table: int, index: int, dtype: Any) -> np.ndarray:
        start, length = self.vector(table, index)
        nbytes = length * np.dtype(dtype).itemsize
        if length and start + nbytes > len(self.data):
            raise self.fail(f"a vector of {length} items runs past the end of the file; truncated?")
        return np.frombuffer(self.data, dtype=np.dtype(dtype).newbyteorder("<"), count=length, offset=start)

    def string(self, table: int, index: int) -> str:
        return bytes(self.array(table, index, np.uint8)).decode("utf-8", errors="replace")


def _options(r: _Reader, op: int) -> dict[str, Any]:
    spec = _OPTIONS.get(r.get(op, 3, "B", 0))
    table = r.table(op, 4)
    if spec is None or table is None:
        return {}
    out: dict[str, Any] = {}
    fmts = {"pad": "b", "act": "b", "i8": "b", "i32": "i", "f32": "f", "bool": "?"}
    for i, (name, kind, default) in enumerate(spec):
        if kind == "vi32":
            out[name] = r.array(table, i, np.int32).tolist()
            continue
        value = r.get(table, i, fmts[kind], default)
        if kind in ("pad", "act"):
            names = _PADDING if kind == "pad" else _ACTIVATION
            value = names[value] if 0 <= value < len(names) else f"{kind.upper()}_{value}"
        out[name] = value
    return out


def _opcode_names(r: _Reader, model: int) -> list[str]:
    names = []
    for code in r.tables(model, 1):
        # Newer files store the code in builtin_code (int32); old ones only in the int8 field.
        number = max(r.get(code, 0, "b", 0), r.get(code, 3, "i", 0))
        if number == 32:
            names.append(f"CUSTOM:{r.string(code, 1)}")
        else:
            names.append(_OPCODES[number] if 0 <= number < len(_OPCODES) else f"BUILTIN_{number}")
    return names


def _buffer_bytes(r: _Reader, buffer: int) -> bytes:
    """A buffer's bytes: inline ``data``, or (files over 2 GB) ``offset``/``size`` into the file."""
    data = r.array(buffer, 0, np.uint8)
    if len(data):
        return data.tobytes()
    offset, size = r.get(buffer, 1, "Q", 0), r.get(buffer, 2, "Q", 0)
    if offset > 1 and offset + size > len(r.data):
        raise r.fail(f"a buffer at offset {offset} of {size} bytes runs past the end of the file")
    return r.data[offset : offset + size] if offset > 1 else b""


def _tensor(r: _Reader, index: int, table: int, buffers: list[int]) -> Tensor:
    shape = tuple(int(d) for d in r.array(table, 0, np.int32))
    code = r.get(table, 1, "b", 0)
    if code not in _DTYPES:
        raise ModelError(
            f"{r.source}: tensor {index} has TensorType {code}, which this reader does not handle"
        )
    dtype = np.dtype(_DTYPES[code])
    buffer = r.get(table, 2, "I", 0)
    if buffer >= len(buffers):
        raise r.fail(f"tensor {index} refers to buffer {buffer} of {len(buffers)}")
    raw = _buffer_bytes(r, buffers[buffer])
    data = None
    if raw:
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(raw) != expected:
            raise r.fail(f"tensor {index} of shape {shape} expected {expected} bytes, got {len(raw)}")
        data = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    return Tensor(index, r.string(table, 3), shape, dtype, data)


def read_tflite(path: str | Path) -> TfliteModel:
    """Parse the TFLite file at ``path``; ModelError if it is not one or is truncated."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the TFLite file ({exc.strerror})") from exc
    r = _Reader(data, str(path))
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise r.fail(f"expected the file identifier {FILE_IDENTIFIER!r} at bytes 4-8, got {data[4:8]!r}")
    model = r.deref(0)
    subgraphs = r.tables(model, 2)
    if not subgraphs:
        raise r.fail("it has no subgraph")
    graph, buffers, opcodes = subgraphs[0], r.tables(model, 4), _opcode_names(r, model)
    tensors = [_tensor(r, i, t, buffers) for i, t in enumerate(r.tables(graph, 0))]
    operators = []
    for i, op in enumerate(r.tables(graph, 3)):
        code = r.get(op, 0, "I", 0)
        if code >= len(opcodes):
            raise r.fail(f"operator {i} uses opcode {code} of {len(opcodes)}")
        ins, outs = (tuple(int(t) for t in r.array(op, f, np.int32)) for f in (1, 2))
        if any(t >= len(tensors) or t < -1 for t in ins + outs):
            raise r.fail(f"operator {i} refers to a tensor outside 0..{len(tensors) - 1}")
        operators.append(Operator(i, opcodes[code], ins, outs, _options(r, op)))
    graph_io = tuple(tuple(int(t) for t in r.array(graph, f, np.int32)) for f in (1, 2))
    return TfliteModel(
        version=r.get(model, 0, "I", 0),
        description=r.string(model, 3),
        tensors=tensors,
        operators=operators,
        inputs=graph_io[0],
        outputs=graph_io[1],
    )
