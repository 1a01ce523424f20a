"""Cross-model verification on LFW: can probes of one model be matched against a gallery of another?

Every image of ``pairs.txt`` is detected and cut once, as the pipeline cuts faces (the ``align``
config, landmarks kept in the crop), then embedded by each model; each model adapts the crops to
its own input (``ModelCard.alignment``). For a (probe, gallery) pair of models the left image of
each LFW pair is embedded by the probe model and the right one by the gallery model, and the
10-fold protocol gives accuracy and VAL at the target FAR (``kfold_accuracy``). The thresholds
reported are the means over folds of the thresholds chosen on the training folds: ``threshold``
at the target FAR (what ``--write`` records for the matcher) and ``accuracy_threshold``.

Example:
    >>> rows = compat_table(pairs, root, {"v1": "facenet-irv1-128", "v2": "mobilefacenet-h128"},
    ...                     [("v1", "v1"), ("v2", "v1")], cache=Path("out/compat"))  # doctest: +SKIP
    >>> rows[1].accuracy  # doctest: +SKIP
    0.99
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streamproc.config import Config
from streamproc.eval.lfw import LfwPairs, unique_images
from streamproc.eval.verification import DEFAULT_TARGET_FAR, kfold_accuracy, squared_l2
from streamproc.models import registry
from streamproc.models.compat import PairCalibration
from streamproc.models.embedder import Embedder
from streamproc.types import Crops

log = logging.getLogger(__name__)

__all__ = [
    "CompatRow",
    "cache_file",
    "compat_table",
    "crop_images",
    "embed_crops",
    "pair_row",
    "time_per_face",
]


@dataclass(frozen=True)
class CompatRow:
    """One (probe model, gallery model) line of the table."""

    label: str
    probe: str  # model version
    gallery: str
    accuracy: float
    accuracy_sem: float
    val: float  # VAL at target_far, mean over folds
    far: float  # FAR measured at the VAL threshold, mean over folds
    threshold: float  # squared L2 at target_far, mean over folds
    accuracy_threshold: float
    heldout_accuracy: float  # accuracy on the last fold alone
    target_far: float

    def calibration(self, source: str) -> PairCalibration:
        return PairCalibration(
            self.probe,
            self.gallery,
            self.threshold,
            self.target_far,
            self.accuracy,
            self.val,
            self.far,
            source,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def crop_images(
    root: Path, images: list[str], config: Config, cache: Path | None, progress: bool = True
) -> tuple[Crops, np.ndarray]:
    """The pipeline's crops (with landmarks) of every image, and which had no face; cached."""
    from streamproc.faces import FacePipeline, read_image
    from streamproc.training.data import _cropper

    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if data["images"].tolist() == images:
                return Crops(data["crops"], data["points"]), data["failed"]
        log.warning("crop cache %s is for other images; recomputing", cache)
    pipeline: FacePipeline = _cropper(config.detector.kind, config.align.image_size)
    pipeline.config = config
    size = config.align.image_size
    crops = Crops(np.zeros((len(images), size, size, 3), np.uint8))
    failed = np.zeros(len(images), bool)
    with tqdm(total=len(images), desc="face crops", unit="img", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(images), 32):
            names = images[start : start + 32]
            got, miss, _ = pipeline.crop_subjects([read_image(root / n) for n in names])
            crops.images[start : start + len(names)], crops.points[start : start + len(names)] = (
                got.images,
                got.points,
            )
            failed[start : start + len(names)] = miss
            bar.update(len(names))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=np.array(images), crops=crops.images, points=crops.points, failed=failed)
        tmp.replace(cache)
    return crops, failed


def cache_file(cache: Path | None, model: str, what: str = "") -> Path | None:
    """Where ``model``'s outputs for the crops cached in ``cache`` are kept (keyed by its checkpoint)."""
    if cache is None:
        return None
    stat = registry.checkpoint_path(model).stat()
    return cache.with_name(f"{cache.stem}-{model}{what}-{stat.st_size}-{stat.st_mtime_ns}.npy")


def embed_crops(model: str, crops: Crops, progress: bool, cache: Path | None = None) -> np.ndarray:
    """Every crop embedded by ``model``; cached beside the crops, keyed by the checkpoint file."""
    saved = cache_file(cache, model)
    if saved is not None and saved.is_file():
        return np.load(saved)
    embedder = Embedder.from_model(*registry.load(model))
    out = np.zeros((len(crops), embedder.card.embedding_dim), np.float32)
    step = 256
    for start in tqdm(range(0, len(crops), step), desc=model, file=sys.stderr, disable=not progress):
        out[start : start + step] = embedder(crops[start : start + step])
    if saved is not None:
        np.save(saved, out)
    return out


def time_per_face(model: str, crops: Crops, batch: int = 32, repeats: int = 3) -> float:
    """Seconds per face of the model call (adaptation included), best of ``repeats`` passes."""
    embedder = Embedder.from_model(*registry.load(model))
    sample = crops[: min(len(crops), 4 * batch)]
    embedder(sample[:batch])  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(sample), batch):
            embedder(sample[start : start + batch])
        best = min(best, (time.perf_counter() - started) / len(sample))
    return best


def pair_row(
    label: str, versions: tuple[str, str], dist: np.ndarray, pairs: LfwPairs, far: float
) -> CompatRow:
    r = kfold_accuracy(dist, pairs.same, pairs.fold, target_far=far)
    return CompatRow(
        label=label,
        probe=versions[0],
        gallery=versions[1],
        accuracy=r.mean,
        accuracy_sem=r.sem,
        val=r.val_mean,
        far=float(np.mean(r.far)),
        threshold=float(np.mean(r.val_thresholds)),
        accuracy_threshold=float(np.mean(r.thresholds)),
        heldout_accuracy=float(r.accuracies[-1]),
        target_far=far,
    )


def compat_table(
    pairs: LfwPairs,
    root: Path,
    models: dict[str, str],
    combos: Sequence[tuple[str, str, str]],
    config: Config,
    *,
    cache: Path | None = None,
    target_far: float = DEFAULT_TARGET_FAR,
    progress: bool = True,
) -> tuple[list[CompatRow], dict[str, np.ndarray]]:
    """Rows for ``combos`` of ``(label, probe key, gallery key)``; ``models`` maps keys to registry names.

    Returns the rows and each model's embeddings of the pair images (rows of ``unique_images``).
    """
    images = unique_images(pairs)
    crops, failed = crop_images(root, images, config, cache, progress)
    log.info("%d images, %d without a detected face (centre crop)", len(images), int(failed.sum()))
    embeddings = {key: embed_crops(name, crops, progress, cache) for key, name in models.items()}
    versions = {key: registry.peek_card(name).version for key, name in models.items()}
    row_of = {name: i for i, name in enumerate(images)}
    left = np.array([row_of[p] for p in pairs.left])
    right = np.array([row_of[p] for p in pairs.right])
    rows = []
    for label, probe, gallery in combos:
        dist = squared_l2(embeddings[probe][left], embeddings[gallery][right])
        rows.append(pair_row(label, (versions[probe], versions[gallery]), dist, pairs, target_far))
    return rows, embeddings
