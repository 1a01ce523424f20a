"""``streamproc demo``: the main job on embedded defaults (grows with each release).

Today: verify and recognise faces of five people shipped with the FaceNet weights.
Every pair of validation images is judged same/different at the model's calibrated
threshold, and each validation image is identified by its nearest training image (k-NN, k=1).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from streamproc.commands.common import add_config_args, config_from_args
from streamproc.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the bundled 5-person example")
    p.add_argument(
        "--data", type=Path, help="folder with train/<person>/ and val/<person>/ (default: fetched)"
    )
    add_config_args(p)
    p.set_defaults(handler=_demo)


def list_people(folder: Path) -> list[tuple[str, Path]]:
    """(person, image path) for every image in a folder-per-person tree, sorted."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    items = [
        (person.name, image)
        for person in sorted(p for p in folder.iterdir() if p.is_dir())
        for image in sorted(person.iterdir())
        if image.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise InputError(f"{folder}: no images in per-person sub-folders")
    return items


def _demo(args: argparse.Namespace) -> int:
    from streamproc.eval.verification import squared_l2
    from streamproc.faces import FacePipeline, read_image
    from streamproc.models import fetch

    config = config_from_args(args)
    root = args.data or fetch.celebrity_dataset()
    pipeline = FacePipeline(config)
    threshold = pipeline.embedder.card.threshold_for(pipeline.model_version)

    def embed(split: str) -> tuple[list[str], np.ndarray, int]:
        items = list_people(root / split)
        result = pipeline.embed_subjects([read_image(p) for _, p in items])
        return [name for name, _ in items], result.embeddings, int(result.failed.sum())

    train_names, train_emb, train_failed = embed("train")
    val_names, val_emb, val_failed = embed("val")
    print(f"model {pipeline.embedder.card.key}, threshold {threshold:.3f} (squared L2)")
    print(
        f"embedded {len(train_names)} train and {len(val_names)} val images; no face found in "
        f"{train_failed + val_failed} (centre crop used)"
    )

    pairs = list(itertools.combinations(range(len(val_names)), 2))
    i, j = np.array(pairs).T
    dist = squared_l2(val_emb[i], val_emb[j])
    same = np.array(val_names)[i] == np.array(val_names)[j]
    correct = (dist <= threshold) == same
    print(
        f"verification: {correct.mean():.4f} accuracy over {len(pairs)} pairs "
        f"({same.sum()} same, {(~same).sum()} different)"
    )

    d = ((val_emb[:, None, :] - train_emb[None, :, :]) ** 2).sum(-1)
    predicted = np.array(train_names)[d.argmin(axis=1)]
    hits = predicted == np.array(val_names)
    print(f"recognition (1-NN against train): {hits.mean():.4f} accuracy over {len(val_names)} images")
    for name, guess, dmin in zip(val_names, predicted, d.min(axis=1), strict=True):
        mark = "ok " if name == guess else "MISS"
        print(f"  {mark} {name:<16} -> {guess:<16} d={dmin:.3f}")
    return 0
