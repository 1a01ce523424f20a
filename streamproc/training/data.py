"""Training data: cached aligned face crops, an identity-balanced P x K sampler, augmentation.

* **Crops** are made once by our own detector and aligner (``FacePipeline.crop_subjects``, the same
  path as enrolment and LFW evaluation) from a folder-per-identity tree, and cached on disk as
  ``<key>.npy`` (``(N, S, S, 3)`` uint8, read back as a memory map) plus ``<key>.json`` (the file
  list, labels, identities, failed detections). The key hashes the root, the file list, detector,
  crop size and cache version, so any change makes a new cache. The cache is written by one
  process (the launcher) before the workers start; workers only read it.
* :class:`PKSampler` draws P identities and K images of each per global batch (identity-major:
  K consecutive rows per identity), from a generator keyed by ``(seed, step)``: any step can be
  replayed, e.g. after a resume. Identities with fewer than K images are, by choice, sampled *with
  replacement* (``small="replace"``, augmentation makes the copies differ) or never sampled
  (``small="skip"``); identities with one image are never usable (no positive). Worker ``r`` of
  ``W`` gets the contiguous rows ``[r B/W, (r+1) B/W)`` of the global batch: disjoint, and covering.
* :func:`augment` flips, shifts, re-encodes as JPEG and down-scales, each image from its own
  generator keyed by ``(seed, step, row of the global batch)``, so the pixels do not depend on how
  many workers share the batch.

>>> sampler = PKSampler(np.repeat(np.arange(5), 3), identities=2, per_identity=3, seed=0)
>>> batch = sampler.global_batch(step=0)
>>> len(batch), sampler.shard(batch, rank=1, world_size=2).tolist() == batch[3:].tolist()
(6, True)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from streamproc.config import load_config
from streamproc.errors import InputError
from streamproc.training.config import AugmentConfig

log = logging.getLogger(__name__)

__all__ = ["FaceCrops", "PKSampler", "augment", "build_crops", "identity_files"]

_CACHE_VERSION = 2  # 2: landmarks in the crops are cached too
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def identity_files(
    root: Path,
    include: set[str] | None = None,
    exclude: Collection[str] = (),
    min_images: int = 2,
    max_identities: int | None = None,
    max_images: int | None = None,
) -> dict[str, list[str]]:
    """``identity -> sorted relative image paths`` of a folder-per-identity tree, filtered.

    Identities are sorted by name; ``include`` keeps only those named, ``exclude`` drops the named,
    then identities with fewer than ``min_images`` are dropped and the first ``max_identities`` kept.
    """
    if not root.is_dir():
        raise InputError(f"training data {root} is not a folder; expected one sub-folder per identity")
    out: dict[str, list[str]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = folder.name
        if (include is not None and name not in include) or name in exclude:
            continue
        files = sorted(f"{name}/{p.name}" for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        files = files[:max_images] if max_images else files
        if len(files) >= min_images:
            out[name] = files
        if max_identities is not None and len(out) == max_identities:
            break
    if len(out) < 2:
        raise InputError(
            f"{root}: expected at least 2 identities with >= {min_images} images, found {len(out)}"
        )
    return out


@dataclass(frozen=True)
class FaceCrops:
    """Aligned crops in rows, with their identity labels; ``crops`` may be a read-only memmap.

    Example:
        >>> c = FaceCrops(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), ("a", "b"), ("a/1", "b/1"),
        ...               np.zeros(2, bool))
        >>> len(c), c.image_size
        (2, 8)
    """

    crops: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64, index into identities
    identities: tuple[str, ...]
    files: tuple[str, ...]  # relative paths, one per row
    failed: np.ndarray  # (N,) bool: no face found, centre crop used
    points: np.ndarray | None = None  # (N, 5, 2) landmarks in the crops (NaN: unknown)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.crops.shape[1])

    def row_of(self) -> dict[str, int]:
        return {f: i for i, f in enumerate(self.files)}


def _cache_key(root: Path, files: Sequence[str], detector: str, image_size: int) -> str:
    blob = json.dumps([_CACHE_VERSION, str(root.resolve()), detector, image_size, list(files)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_cached(npy: Path, index: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not (npy.is_file() and index.is_file()):
        return None
    try:
        meta = json.loads(index.read_text())
        crops = np.load(npy, mmap_mode="r")
        points = np.array(meta["points"], np.float32).reshape(len(crops), 5, 2)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("crop cache %s unreadable (%s); rebuilding", npy, exc)
        return None
    return crops, np.array(meta["failed"], bool), points


def _cropper(detector: str, image_size: int) -> Any:
    from torch import nn

    from streamproc.faces import FacePipeline
    from streamproc.models.checkpoint import ModelCard
    from streamproc.models.embedder import Embedder

    config = load_config(None, [f"detector.kind={detector}", f"align.image_size={image_size}"])
    # crop_subjects never embeds: a placeholder embedder spares loading a face model.
    card = ModelCard(name="none", version="none", arch="none", embedding_dim=128, input_size=image_size)
    return FacePipeline(config, embedder=Embedder.from_model(nn.Identity(), card))


def build_crops(
    root: Path,
    by_identity: dict[str, list[str]],
    cache_dir: Path,
    *,
    detector: str = "mtcnn",
    image_size: int = 160,
    chunk: int = 32,
    progress: bool = True,
) -> FaceCrops:
    """Detect, align and crop every listed image once (or read the cache); rows follow the listing."""
    from streamproc.faces import read_image

    identities = tuple(by_identity)
    files = tuple(f for name in identities for f in by_identity[name])
    labels = np.array([i for i, name in enumerate(identities) for _ in by_identity[name]], np.int64)
    key = _cache_key(root, files, detector, image_size)
    npy, index = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    cached = _load_cached(npy, index)
    if cached is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f"{key}.{os.getpid()}.tmp.npy"
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(files), image_size, image_size, 3)
        )
        failed = np.zeros(len(files), bool)
        points = np.full((len(files), 5, 2), np.nan, np.float32)
        pipeline = _cropper(detector, image_size)
        with tqdm(
            total=len(files), desc="face crops", unit="img", file=sys.stderr, disable=not progress
        ) as bar:
            for start in range(0, len(files), chunk):
                names = files[start : start + chunk]
                crops, miss, _ = pipeline.crop_subjects([read_image(root / f) for f in names])
                out[start : start + len(names)], failed[start : start + len(names)] = crops.images, miss
                points[start : start + len(names)] = crops.points
                bar.update(len(names))
        out.flush()
        del out
        os.replace(tmp, npy)
        meta = {
            "root": str(root.resolve()),
            "files": list(files),
            "failed": failed.tolist(),
            "points": np.round(points, 2).tolist(),  # NaN is written as JSON NaN
            "detector": detector,
        }
        index.write_text(json.dumps(meta))
        log.info("cached %d face crops (%d without a detected face) in %s", len(files), failed.sum(), npy)
        cached = np.load(npy, mmap_mode="r"), failed, points
    crops, failed, points = cached
    return FaceCrops(crops, labels, identities, files, failed, points)


class PKSampler:
    """Global batches of P identities x K images, deterministic in ``(seed, step)``, sharded by rank.

    Example:
        >>> s = PKSampler(np.array([0, 0, 1, 1, 1, 2]), identities=2, per_identity=2, seed=1, small="skip")
        >>> sorted(set(s.labels[s.global_batch(3)].tolist())) in ([0, 1],)
        True
    """

    def __init__(
        self, labels: np.ndarray, identities: int, per_identity: int, seed: int = 0, small: str = "replace"
    ) -> None:
        if small not in ("replace", "skip"):
            raise ValueError(f"small: expected 'replace' or 'skip', got {small!r}")
        self.labels = np.asarray(labels, np.int64)
        self.identities, self.per_identity, self.seed = identities, per_identity, seed
        rows_of: dict[int, np.ndarray] = {}
        for label in np.unique(self.labels):
            rows = np.flatnonzero(self.labels == label)
            needed = per_identity if small == "skip" else 2
            if len(rows) >= needed:
                rows_of[int(label)] = rows
        self._rows = rows_of
        self._eligible = np.array(sorted(rows_of), np.int64)
        if len(self._eligible) < identities:
            raise ValueError(
                f"identities_per_batch={identities} but only {len(self._eligible)} identities have "
                f">= {per_identity if small == 'skip' else 2} images"
            )

    @property
    def batch_size(self) -> int:
        return self.identities * self.per_identity

    def global_batch(self, step: int) -> np.ndarray:
        """Row indices ``(P*K,)`` of global batch ``step``, K consecutive rows per identity."""
        rng = np.random.default_rng([self.seed, step])
        chosen = rng.choice(self._eligible, size=self.identities, replace=False)
        parts = []
        for label in chosen:
            rows = self._rows[int(label)]
            parts.append(rng.choice(rows, size=self.per_identity, replace=len(rows) < self.per_identity))
        return np.concatenate(parts)

    def shard(self, batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
        """Rows ``[rank B/W, (rank+1) B/W)`` of a global batch: disjoint and covering across ranks."""
        if len(batch) % world_size or not 0 <= rank < world_size:
            raise ValueError(f"cannot give rank {rank} of {world_size} an equal share of {len(batch)} rows")
        size = len(batch) // world_size
        return batch[rank * size : (rank + 1) * size]


def augment_one(crop: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """One perturbed copy of a ``(S, S, 3)`` uint8 crop (JPEG coding treats it as BGR: harmless)."""
    out = crop
    size = crop.shape[0]
    if config.downscale_prob and rng.random() < config.downscale_prob:
        small = int(rng.integers(min(config.downscale_min_px, size), size + 1))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size))
    if config.jpeg_prob and rng.random() < config.jpeg_prob:
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = np.asarray(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    if config.jitter_px:
        dx, dy = (int(v) for v in rng.integers(-config.jitter_px, config.jitter_px + 1, size=2))
        shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
        out = np.asarray(cv2.warpAffine(out, shift, (size, size), borderMode=cv2.BORDER_REPLICATE))
    if config.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def augment(
    crops: np.ndarray, positions: np.ndarray, step: int, seed: int, config: AugmentConfig
) -> np.ndarray:
    """Augment rows of a global batch; ``positions`` are their row numbers in the global batch, so the
    result for an image does not depend on the worker that holds it."""
    return np.stack(
        [
            augment_one(np.asarray(crop), np.random.default_rng([seed, step, int(pos)]), config)
            for crop, pos in zip(crops, positions, strict=True)
        ]
    )
