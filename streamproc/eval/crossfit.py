"""Cross-fitted compatibility: every LFW pair is scored by heads that never saw its people.

LFW View 2's ten folds hold disjoint people. For each fold ``k`` every recipe (``HeadRecipe``)
fits a head on the faces of the people *outside* fold ``k`` (the pair images of the other nine
folds: their trunk features, their v1 embeddings, their names), and only fold ``k``'s pairs are
scored with it. Every distance of the table is therefore a distance between faces of unseen
people, and the usual 10-fold protocol (``kfold_accuracy``: threshold chosen on the other nine
folds) turns them into accuracy and VAL at the target FAR with the s.e.m. over folds.

The trunk's features and v1's embeddings are computed once per face and cached by the caller, so
ten heads per recipe cost seconds (a ridge map) to a minute (triplet training).

Example:
    >>> rows = crossfit_table(pairs, images, features, v1, {"v2": HeadRecipe()},
    ...                       [("v2 vs v1", "v2", "v1")])  # doctest: +SKIP
    >>> rows[0].accuracy  # doctest: +SKIP
    0.99
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamproc.config import Config
from streamproc.eval.compat import CompatRow, cache_file, crop_images, embed_crops, pair_row
from streamproc.eval.lfw import LfwPairs
from streamproc.eval.verification import DEFAULT_TARGET_FAR, squared_l2
from streamproc.models import registry
from streamproc.training.heads import HeadRecipe, apply_head, fit_head, trunk_features

log = logging.getLogger(__name__)

__all__ = ["OLD", "crossfit_embeddings", "crossfit_table", "face_arrays", "person_of"]

OLD = "v1"  # the key of the frozen old model's embeddings in combos


def person_of(image: str) -> str:
    """LFW's ``Name/Name_0001.jpg`` -> ``Name``."""
    return image.split("/", 1)[0]


def face_arrays(
    root: Path, images: list[str], config: Config, old_model: str, cache: Path, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Trunk features and ``old_model``'s embeddings of every image's pipeline crop, cached beside
    the crops in ``cache`` (each face is detected and embedded once)."""
    crops, failed = crop_images(root, images, config, cache, progress)
    log.info("%d images, %d without a detected face (centre crop)", len(images), int(failed.sum()))
    old = embed_crops(old_model, crops, progress, cache)
    saved = cache_file(cache, registry.MOBILEFACENET, "-trunk")
    assert saved is not None
    if saved.is_file():
        return np.load(saved), old
    features = trunk_features(crops)
    np.save(saved, features)
    return features, old


def crossfit_embeddings(
    pairs: LfwPairs,
    images: list[str],
    features: np.ndarray,
    old: np.ndarray,
    recipes: dict[str, HeadRecipe],
) -> dict[str, dict[int, np.ndarray]]:
    """``{recipe: {fold: embeddings of every image by the head fitted without that fold's people}}``."""
    people = np.array([person_of(i) for i in images])
    out: dict[str, dict[int, np.ndarray]] = {key: {} for key in recipes}
    for fold in np.unique(pairs.fold):
        in_fold = pairs.fold == fold
        names = list(np.asarray(pairs.left)[in_fold]) + list(np.asarray(pairs.right)[in_fold])
        train = ~np.isin(people, sorted({person_of(n) for n in names}))  # nobody of this fold
        for key, recipe in recipes.items():
            head = fit_head(features[train], people[train], old[train], recipe)
            out[key][int(fold)] = apply_head(head, features)
        log.info("fold %d: heads fitted on %d faces of %d people", fold, train.sum(), len(set(people[train])))
    return out


def crossfit_table(
    pairs: LfwPairs,
    images: list[str],
    features: np.ndarray,
    old: np.ndarray,
    recipes: dict[str, HeadRecipe],
    combos: Sequence[tuple[str, str, str]],
    target_far: float = DEFAULT_TARGET_FAR,
) -> list[CompatRow]:
    """Rows for ``combos`` of ``(label, probe key, gallery key)``; a key is ``OLD`` or a recipe's."""
    fitted = crossfit_embeddings(pairs, images, features, old, recipes)
    row_of = {name: i for i, name in enumerate(images)}
    left = np.array([row_of[p] for p in pairs.left])
    right = np.array([row_of[p] for p in pairs.right])

    def side(key: str, fold: int) -> np.ndarray:
        return old if key == OLD else fitted[key][fold]

    rows = []
    for label, probe, gallery in combos:
        dist = np.zeros(len(pairs.same))
        for fold in np.unique(pairs.fold):
            at = pairs.fold == fold
            dist[at] = squared_l2(side(probe, fold)[left[at]], side(gallery, fold)[right[at]])
        rows.append(pair_row(label, (probe, gallery), dist, pairs, target_far))
    return rows
