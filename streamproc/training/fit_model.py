"""Make a registered v2 comparable with v1 from a folder of labelled faces, in minutes on a CPU.

``fit_compatible_model`` cuts every face as the pipeline does (MTCNN, the ``align`` config, the
landmarks kept), embeds it once with the old model and once with the frozen MobileFaceNet trunk
(all cached beside ``cache``), fits a head (``streamproc.training.heads``) on the training people,
calibrates the card against the old version on the held-out people (never seen by the head), and
writes and registers the checkpoint. ``streamproc models fit-head`` runs it; the rolling-upgrade
test makes its v2 with it.

Example:
    >>> train, held = pick_people(Path("lfw-deepfunneled"), 160, 60, 3)  # doctest: +SKIP
    >>> card = fit_compatible_model(root, train, held, config, HeadRecipe(), "m-h128", "v2",
    ...                             "facenet-irv1-128", Path("out/heads/faces.npz"))  # doctest: +SKIP
    >>> card.compatible_with  # doctest: +SKIP
    ('v2', 'v1')
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from streamproc.config import Config
from streamproc.errors import ConfigError
from streamproc.models import registry
from streamproc.models.checkpoint import ModelCard, save_checkpoint
from streamproc.training.heads import (
    HeadRecipe,
    apply_head,
    calibrate,
    fit_head,
    head_card,
    head_model,
    trunk_features,
)

log = logging.getLogger(__name__)

__all__ = ["fit_compatible_model", "pick_people"]


def pick_people(root: Path, train: int, held_out: int, faces: int) -> tuple[list[str], list[str]]:
    """Image paths (``person/file.jpg``) of ``train`` and of ``held_out`` other people, ``faces``
    images each, spread evenly over the sorted people of ``root`` that have that many."""
    if min(train, held_out) < 2 or faces < 2:
        raise ConfigError("fit-head: needs at least 2 training and 2 held-out people with 2+ faces each")
    people = sorted(p.name for p in root.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= faces)
    if len(people) < train + held_out:
        raise ConfigError(
            f"{root}: {len(people)} people have {faces}+ .jpg images, {train + held_out} are needed"
        )
    chosen = people[:: len(people) // (train + held_out)][: train + held_out]

    def images(names: list[str]) -> list[str]:
        return [f"{p}/{f.name}" for p in names for f in sorted((root / p).glob("*.jpg"))[:faces]]

    return images(chosen[:train]), images(chosen[train:])


def fit_compatible_model(
    root: Path,
    train: list[str],
    held: list[str],
    config: Config,
    recipe: HeadRecipe,
    name: str,
    version: str,
    old_model: str,
    cache: Path,
) -> ModelCard:
    """Fit, calibrate, save and register ``name`` (see the module docstring); returns its card."""
    from streamproc.eval.compat import crop_images, embed_crops

    images = train + held
    labels = np.array([i.split("/", 1)[0] for i in images])
    if set(labels[: len(train)]) & set(labels[len(train) :]):
        raise ConfigError("fit-head: the held-out people must not be training people")
    crops, failed = crop_images(root, images, config, cache, progress=False)
    log.info("%d faces, %d without a detected face (centre crop)", len(images), int(failed.sum()))
    old = embed_crops(old_model, crops, False, cache)
    features = trunk_features(crops)
    fit = np.arange(len(images)) < len(train)
    head = fit_head(features[fit], labels[fit], old[fit], recipe)
    old_version = registry.peek_card(old_model).version
    fields = calibrate(apply_head(head, features[~fit]), old[~fit], labels[~fit], version, old_version)
    fields["metrics"]["train_people"] = len(set(labels[fit]))
    card = head_card(name, version, old_version, fields, recipe)
    path = save_checkpoint(registry.models_dir() / f"{name}.pt", head_model(head), card)
    registry.register(name, path)
    return card
