"""Cross-fitting: a pair is scored only by heads fitted without its people."""

from __future__ import annotations

import numpy as np

from streamproc.eval.crossfit import crossfit_table
from streamproc.eval.lfw import LfwPairs
from streamproc.training.heads import HeadRecipe, apply_head, fit_head


def _memorisable_lfw(seed: int = 0) -> tuple[LfwPairs, list[str], np.ndarray, np.ndarray]:
    """Ten folds of 3 people x 2 faces. The trunk features are pure noise, the old embeddings
    separate people well: a head can only map a face onto its old embedding by memorising it."""
    rng = np.random.default_rng(seed)
    images, left, right, same, fold = [], [], [], [], []
    for k in range(10):
        names = [f"P{k}_{i}" for i in range(3)]
        faces = [f"{n}/{n}_000{j}.jpg" for n in names for j in (1, 2)]
        images += faces
        for i in range(3):
            left += [faces[2 * i], faces[2 * i]]
            right += [faces[2 * i + 1], faces[(2 * i + 2) % 6]]
            same += [True, False]
            fold += [k, k]
    images = sorted(images)
    people = np.array([i.split("/")[0] for i in images])
    centres = {p: rng.normal(size=128) for p in set(people)}
    old = np.stack([centres[p] + 0.2 * rng.normal(size=128) for p in people])
    old = (old / np.linalg.norm(old, axis=1, keepdims=True)).astype(np.float32)
    features = rng.normal(size=(len(images), 192)).astype(np.float32)
    return LfwPairs(left, right, np.array(same), np.array(fold)), images, features, old


def test_memorised_faces_do_not_help_unseen_people() -> None:
    pairs, images, features, old = _memorisable_lfw()
    ridge = HeadRecipe("ridge", alpha=1e-3)
    (seen_by_all,) = crossfit_table(pairs, images, features, old, {}, [("v1-v1", "v1", "v1")])
    (crossfit,) = crossfit_table(pairs, images, features, old, {"map": ridge}, [("mixed", "map", "v1")])
    # the same map fitted on every face (the optimistic protocol) memorises them all
    leaked = apply_head(fit_head(features, np.array([i[:4] for i in images]), old, ridge), features)
    row_of = {n: i for i, n in enumerate(images)}
    left, right = [row_of[p] for p in pairs.left], [row_of[p] for p in pairs.right]
    leaked_dist = ((leaked[left] - old[right]) ** 2).sum(1)
    leaked_acc = np.mean((leaked_dist < 1.0) == pairs.same)
    assert seen_by_all.accuracy > 0.95 and leaked_acc > 0.95
    assert crossfit.accuracy < 0.75, crossfit.accuracy  # chance: noise features know nobody unseen
