"""The LFW verification benchmark: parse ``pairs.txt``, embed each image once, run the 10-fold protocol.

``pairs.txt`` (View 2) starts with a header ``n_folds n_per_fold`` (officially ``10 300``); each fold
then holds ``n_per_fold`` same-person lines ``name i j`` followed by ``n_per_fold`` different-person
lines ``name1 i name2 j``. Image ``i`` of ``name`` is ``name/name_000i.jpg`` under the image root.
A one-number header ``n`` (the View 1 files ``pairsDevTrain.txt``/``pairsDevTest.txt``) is one fold.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "pairs.txt"
>>> _ = path.write_text("1 1\\nAnn 1 2\\nAnn 1 Bob 3\\n")
>>> pairs = read_pairs(path)
>>> pairs.left, pairs.right, pairs.same.tolist()
(['Ann/Ann_0001.jpg', 'Ann/Ann_0001.jpg'], ['Ann/Ann_0002.jpg', 'Bob/Bob_0003.jpg'], [True, False])
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streamproc.errors import InputError
from streamproc.eval.verification import (
    DEFAULT_TARGET_FAR,
    KFoldResult,
    kfold_accuracy,
    squared_l2,
    val_at_far,
    val_far,
)
from streamproc.gallery.quantize import quantize, squared_l2_int8

log = logging.getLogger(__name__)

_CACHE_VERSION = 1
_NORM_TOLERANCE = 1e-3


@dataclass
class LfwPairs:
    """Image pairs in columns: pair ``k`` compares ``left[k]`` with ``right[k]``.

    Paths are relative to the image root, e.g. ``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``.

    Example:
        >>> p = LfwPairs(["A/A_0001.jpg"], ["A/A_0002.jpg"], same=np.array([True]), fold=np.array([0]))
        >>> len(p)
        1
    """

    left: list[str]
    right: list[str]
    same: np.ndarray  # (P,) bool, True = same person
    fold: np.ndarray  # (P,) int64, fold index from 0

    def __post_init__(self) -> None:
        self.same = np.asarray(self.same)
        self.fold = np.asarray(self.fold, np.int64)
        n = len(self.left)
        if self.same.dtype != np.bool_:
            raise ValueError(f"LfwPairs.same: expected bool labels, got dtype {self.same.dtype}")
        for name, size in (("right", len(self.right)), ("same", len(self.same)), ("fold", len(self.fold))):
            if size != n:
                raise ValueError(f"LfwPairs.{name}: expected {n} entries like left, got {size}")

    def __len__(self) -> int:
        return len(self.left)


def _image(name: str, index: str, path: Path, line_no: int) -> str:
    if not index.isdigit() or int(index) < 1:
        raise InputError(f"{path} line {line_no}: expected a positive image number, got {index!r}")
    return f"{name}/{name}_{int(index):04d}.jpg"


def _numbered_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read pairs file {path}: {exc}; pass the path of LFW's pairs.txt") from exc
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield line_no, line.split()


def _header(path: Path, line_no: int, fields: list[str]) -> tuple[int, int]:
    if len(fields) in (1, 2) and all(f.isdigit() and int(f) > 0 for f in fields):
        return (1, int(fields[0])) if len(fields) == 1 else (int(fields[0]), int(fields[1]))
    raise InputError(
        f"{path} line {line_no}: expected a header 'n_folds n_per_fold' such as '10 300', "
        f"got {' '.join(fields)!r}"
    )


def read_pairs(path: Path) -> LfwPairs:
    """Parse an LFW pairs file; a malformed one raises ``InputError`` naming the file and line."""
    path = Path(path)
    lines = _numbered_lines(path)
    first = next(lines, None)
    if first is None:
        raise InputError(f"{path}: expected a header 'n_folds n_per_fold', got an empty file")
    n_folds, n_per_fold = _header(path, *first)
    left: list[str] = []
    right: list[str] = []
    same: list[bool] = []
    expected = 2 * n_folds * n_per_fold
    last_line = first[0]
    for line_no, fields in lines:
        last_line = line_no
        k = len(same)
        if k == expected:
            raise InputError(
                f"{path} line {line_no}: expected the end of the file after {expected} pairs "
                f"(header {n_folds} {n_per_fold}), got another line"
            )
        is_same = (k // n_per_fold) % 2 == 0
        if is_same and len(fields) == 3:
            left.append(_image(fields[0], fields[1], path, line_no))
            right.append(_image(fields[0], fields[2], path, line_no))
        elif not is_same and len(fields) == 4:
            left.append(_image(fields[0], fields[1], path, line_no))
            right.append(_image(fields[2], fields[3], path, line_no))
        else:
            want = "'name i j' (same person)" if is_same else "'name1 i name2 j' (different people)"
            raise InputError(f"{path} line {line_no}: expected {want}, got {len(fields)} fields")
        same.append(is_same)
    if len(same) != expected:
        raise InputError(
            f"{path} line {last_line}: file ends after {len(same)} pairs, "
            f"expected {expected} (header {n_folds} {n_per_fold}); is the file truncated?"
        )
    fold = np.arange(expected) // (2 * n_per_fold)
    return LfwPairs(left=left, right=right, same=np.array(same, bool), fold=fold)


def unique_images(pairs: LfwPairs) -> list[str]:
    """Every image the pairs refer to, once each, sorted.

    >>> unique_images(LfwPairs(["B/B_0001.jpg"], ["A/A_0001.jpg"], np.array([False]), np.array([0])))
    ['A/A_0001.jpg', 'B/B_0001.jpg']
    """
    return sorted(set(pairs.left) | set(pairs.right))


@dataclass
class EmbedResult:
    """What an embed callable returns for a list of image paths, one row per path.

    Example:
        >>> r = EmbedResult(embeddings=np.eye(2, dtype=np.float32), failed=np.array([False, True]))
        >>> r.embeddings.shape, int(r.failed.sum())
        ((2, 2), 1)
    """

    embeddings: np.ndarray  # (N, D) float32, L2-normalised rows
    failed: np.ndarray  # (N,) bool: no face detected, the row embeds a fallback crop

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, np.float32)
        self.failed = np.asarray(self.failed)
        if self.embeddings.ndim != 2:
            raise ValueError(f"EmbedResult.embeddings: expected (N, D), got shape {self.embeddings.shape}")
        if self.failed.dtype != np.bool_ or self.failed.shape != (len(self.embeddings),):
            raise ValueError(
                f"EmbedResult.failed: expected ({len(self.embeddings)},) bool, "
                f"got {self.failed.dtype} {self.failed.shape}"
            )
        norms = np.linalg.norm(self.embeddings, axis=1)
        if len(norms) and not np.all(np.abs(norms - 1.0) <= _NORM_TOLERANCE):
            raise ValueError(
                f"EmbedResult.embeddings: expected L2-normalised rows, got norms in "
                f"[{norms.min():.4f}, {norms.max():.4f}]"
            )


Embed = Callable[[list[Path]], EmbedResult]


@dataclass
class LfwResult:
    """Everything ``evaluate`` measured; ``streamproc.eval.report.write_report`` turns it into files."""

    model_name: str
    images: list[str]  # unique images, the rows of embeddings
    embeddings: np.ndarray  # (N, D) float32
    failed: np.ndarray  # (N,) bool, detection failed for that image
    distances: np.ndarray  # (P,) float64 squared L2 of each pair
    same: np.ndarray  # (P,) bool
    fold: np.ndarray  # (P,) int64
    kfold: KFoldResult  # float embeddings, 10-fold protocol
    int8_kfold: KFoldResult  # the same with int8-quantised embeddings
    val_at_far: float  # VAL at FAR <= target_far over all pairs (threshold chosen on all pairs)
    val_threshold: float
    far_at_val_threshold: float  # the FAR actually reached there (<= target_far)
    target_far: float
    images_per_second: float  # of the embedding run that computed the embeddings
    from_cache: bool

    @property
    def n_failed(self) -> int:
        return int(np.sum(self.failed))


@dataclass
class _Embedded:
    embeddings: np.ndarray
    failed: np.ndarray
    images_per_second: float


def _cache_key(images: list[str], model_name: str, root: Path, tag: str) -> dict[str, np.ndarray]:
    return {
        "images": np.array(images, dtype=str),
        "model_name": np.array(model_name),
        "root": np.array(str(root.resolve())),
        "tag": np.array(tag),
        "version": np.array(_CACHE_VERSION),
    }


def _load_cache(cache: Path, key: dict[str, np.ndarray]) -> _Embedded | None:
    """The cached embeddings if ``cache`` holds exactly this key, else None (with the reason logged)."""
    if not cache.exists():
        return None
    try:
        with np.load(cache, allow_pickle=False) as data:
            for name, want in key.items():
                if name not in data or not np.array_equal(data[name], want):
                    log.warning("embedding cache %s is stale (%s differs); recomputing", cache, name)
                    return None
            return _Embedded(data["embeddings"], data["failed"], float(data["images_per_second"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("embedding cache %s is unreadable (%s); recomputing", cache, exc)
        return None


def _save_cache(cache: Path, key: dict[str, np.ndarray], embedded: _Embedded) -> None:
    """Write atomically: a crash mid-write never leaves a half file that looks valid."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        **key,
        "embeddings": embedded.embeddings,
        "failed": embedded.failed,
        "images_per_second": np.array(embedded.images_per_second),
    }
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, cache)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _embed_all(paths: list[Path], embed: Embed, chunk_size: int, progress: bool, desc: str) -> _Embedded:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(paths)} LFW images are missing, first {missing[0]}; "
            "pass the folder that holds one sub-folder per person (e.g. lfw-deepfunneled) as root"
        )
    parts: list[EmbedResult] = []
    seconds = 0.0
    with tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(paths), chunk_size):
            chunk = paths[start : start + chunk_size]
            began = time.perf_counter()
            result = embed(chunk)
            seconds += time.perf_counter() - began
            if len(result.embeddings) != len(chunk):
                raise ValueError(
                    f"embed: expected {len(chunk)} rows for {len(chunk)} paths, got {len(result.embeddings)}"
                )
            if parts and result.embeddings.shape[1] != parts[0].embeddings.shape[1]:
                raise ValueError(
                    f"embed: expected dimension {parts[0].embeddings.shape[1]} in every chunk, "
                    f"got {result.embeddings.shape[1]}"
                )
            parts.append(result)
            bar.update(len(chunk))
    return _Embedded(
        embeddings=np.concatenate([p.embeddings for p in parts]),
        failed=np.concatenate([p.failed for p in parts]),
        images_per_second=len(paths) / seconds if seconds > 0 else float("inf"),
    )


def evaluate(
    pairs: LfwPairs,
    root: Path,
    embed: Embed,
    *,
    model_name: str,
    cache: Path | None = None,
    cache_tag: str = "",
    chunk_size: int = 64,
    progress: bool = True,
    target_far: float = DEFAULT_TARGET_FAR,
) -> LfwResult:
    """Embed every image once (or load them from ``cache``) and measure verification on ``pairs``.

    ``embed`` gets absolute paths, ``chunk_size`` at a time, and returns an ``EmbedResult``. The
    ``.npz`` cache is keyed by the sorted image list, ``model_name``, the resolved ``root`` and
    ``cache_tag`` (put detector and alignment settings there); any mismatch recomputes and
    overwrites it. Images per second come from the run that computed the embeddings.

    Example (``my_embed`` being any function from paths to an ``EmbedResult``):
        >>> result = evaluate(read_pairs(lfw / "pairs.txt"), lfw / "lfw-deepfunneled", my_embed,
        ...                   model_name="facenet", cache=Path("out/lfw.npz"))  # doctest: +SKIP
        >>> result.kfold.mean  # doctest: +SKIP
        0.99
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive number of images, got {chunk_size}")
    images = unique_images(pairs)
    key = _cache_key(images, model_name, Path(root), cache_tag)
    embedded = _load_cache(cache, key) if cache is not None else None
    from_cache = embedded is not None
    if embedded is None:
        paths = [Path(root) / name for name in images]
        embedded = _embed_all(paths, embed, chunk_size, progress, f"embed LFW ({model_name})")
        if cache is not None:
            _save_cache(cache, key, embedded)
    row = {name: i for i, name in enumerate(images)}
    left = np.array([row[name] for name in pairs.left], np.int64)
    right = np.array([row[name] for name in pairs.right], np.int64)
    emb = embedded.embeddings
    dist = squared_l2(emb[left], emb[right])
    codes = quantize(emb)
    dist_int8 = squared_l2_int8(codes[left], codes[right])
    val, threshold = val_at_far(dist, pairs.same, target_far)
    return LfwResult(
        model_name=model_name,
        images=images,
        embeddings=emb,
        failed=embedded.failed,
        distances=dist,
        same=pairs.same,
        fold=pairs.fold,
        kfold=kfold_accuracy(dist, pairs.same, pairs.fold, target_far),
        int8_kfold=kfold_accuracy(dist_int8, pairs.same, pairs.fold, target_far),
        val_at_far=val,
        val_threshold=threshold,
        far_at_val_threshold=val_far(dist, pairs.same, threshold)[1],
        target_far=target_far,
        images_per_second=embedded.images_per_second,
        from_cache=from_cache,
    )
