"""The registry of embedding architectures: the paper's NN1..NNS2, Inception-ResNet-v1, MobileFaceNet.

Importing this module builds nothing; :func:`build` makes one model, :func:`describe` builds each
in turn to count it (what ``streamproc models info`` prints).

    >>> build("nns2", embedding_dim=64).input_size
    140
    >>> sorted(ARCHITECTURES)[:3]
    ['inception_resnet_v1', 'mobilefacenet', 'nn1']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from streamproc.errors import ConfigError
from streamproc.models.flops import count
from streamproc.models.inception import InceptionNet
from streamproc.models.layers import check_embedding_dim
from streamproc.models.zf import NN1


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its name, square input size, a builder taking the embedding size, a line of text.

    ``embedding_dims`` lists the sizes it accepts when they differ from the paper's {64, 128, 256, 512}.

    >>> ARCHITECTURES["nn2"].input_size
    224
    """

    name: str
    input_size: int
    build: Callable[[int], nn.Module]
    description: str
    embedding_dims: tuple[int, ...] | None = None


def _inception_resnet_v1(embedding_dim: int) -> nn.Module:
    # Imported here so the registry imports even where that module is not there yet.
    from streamproc.models.inception_resnet_v1 import InceptionResnetV1

    return InceptionResnetV1(embedding_dim=embedding_dim)


def _inception(arch: str, embedding_dim: int) -> nn.Module:
    return InceptionNet(arch, embedding_dim)


def _mobilefacenet(embedding_dim: int) -> nn.Module:
    from streamproc.models.mobilefacenet import MobileFaceNet

    return MobileFaceNet(embedding_dim)


_SPECS = (
    ArchSpec("nn1", 220, NN1, "Zeiler&Fergus with 1x1 convs and maxout fc (paper Table 1)"),
    ArchSpec("nn2", 224, partial(_inception, "nn2"), "Inception with L2 pooling (paper Table 2)"),
    ArchSpec("nn3", 160, partial(_inception, "nn3"), "NN2 at 160x160"),
    ArchSpec("nn4", 96, partial(_inception, "nn4"), "NN2 at 96x96 without 5x5 in 4e/5a/5b"),
    ArchSpec("nns1", 165, partial(_inception, "nns1"), "mini Inception, ~26M params / 220M FLOPS"),
    ArchSpec("nns2", 140, partial(_inception, "nns2"), "tiny Inception, ~4.3M params / 20M FLOPS"),
    ArchSpec("inception_resnet_v1", 160, _inception_resnet_v1, "Inception-ResNet-v1 (Szegedy et al. 2016)"),
    ArchSpec(
        "mobilefacenet",
        112,
        _mobilefacenet,
        "MobileFaceNet (Chen et al. 2018), 192-D trunk; other sizes add a linear head",
        embedding_dims=(64, 128, 192, 256, 512),
    ),
)

ARCHITECTURES: dict[str, ArchSpec] = {spec.name: spec for spec in _SPECS}


def get(name: str) -> ArchSpec:
    """The ArchSpec called ``name``; ConfigError naming the valid choices otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}"
        ) from None


def build(name: str, embedding_dim: int = 128) -> nn.Module:
    """A freshly initialised model of architecture ``name`` with ``embedding_dim`` outputs.

    Raises ConfigError for an unknown name or an embedding size outside {64, 128, 256, 512}
    (or outside the spec's own ``embedding_dims``).
    """
    spec = get(name)
    if spec.embedding_dims is None:
        check_embedding_dim(embedding_dim)
    elif embedding_dim not in spec.embedding_dims:
        choices = ", ".join(str(size) for size in spec.embedding_dims)
        raise ConfigError(f"{name}: embedding size must be one of {choices}, got {embedding_dim}")
    return spec.build(embedding_dim)


def describe(embedding_dim: int = 128, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per architecture (all by default): name, input_size, params, multiply_adds, description.

    Builds each model with ``embedding_dim`` outputs and runs it once on a zero image (NN1 alone
    holds ~0.6 GB of weights); nothing is cached.
    """
    rows = []
    for name in ARCHITECTURES if names is None else names:
        spec = get(name)
        cost = count(build(name, embedding_dim), spec.input_size)
        rows.append(
            {
                "name": spec.name,
                "input_size": spec.input_size,
                "params": cost.params,
                "multiply_adds": cost.multiply_adds,
                "description": spec.description,
            }
        )
    return rows
