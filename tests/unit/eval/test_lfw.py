"""LFW pairs parsing (the real file and broken ones) and the evaluate loop with its embedding cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.errors import InputError
from streamproc.eval.lfw import EmbedResult, LfwPairs, evaluate, read_pairs, unique_images

# --- the real View 2 file ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_pairs(lfw_dir: Path) -> LfwPairs:
    path = lfw_dir / "pairs.txt"
    if not path.is_file():
        pytest.skip(f"LFW pairs.txt not found at {path}")
    return read_pairs(path)


def test_real_pairs_counts(real_pairs: LfwPairs) -> None:
    assert len(real_pairs) == 6000
    assert int(real_pairs.same.sum()) == 3000
    assert np.bincount(real_pairs.fold).tolist() == [600] * 10
    assert np.bincount(real_pairs.fold[real_pairs.same]).tolist() == [300] * 10
    assert (real_pairs.left[0], real_pairs.right[0]) == (
        "Abel_Pacheco/Abel_Pacheco_0001.jpg",
        "Abel_Pacheco/Abel_Pacheco_0004.jpg",
    )


def test_real_pairs_labels_match_names(real_pairs: LfwPairs) -> None:
    same_name = np.array(
        [a.split("/")[0] == b.split("/")[0] for a, b in zip(real_pairs.left, real_pairs.right, strict=True)]
    )
    np.testing.assert_array_equal(same_name, real_pairs.same)


def test_real_pairs_images_exist(real_pairs: LfwPairs, lfw_dir: Path) -> None:
    root = lfw_dir / "lfw-deepfunneled"
    images = unique_images(real_pairs)
    missing = [name for name in images if not (root / name).is_file()]
    assert missing == []
    assert len(images) == len(set(real_pairs.left) | set(real_pairs.right))


# --- broken files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("", None, "empty file"),
        ("ten 300\n", 1, "header 'n_folds n_per_fold'"),
        ("1 1 1\n", 1, "header"),
        ("10\t300\nAbel 1\n", 2, "'name i j'"),
        ("1 1\nA 1 2 3\nA 1 B 1\n", 2, "'name i j'"),
        ("1 1\nA 1 2\nA 1 B\n", 3, "'name1 i name2 j'"),
        ("1 1\nA 0 2\nA 1 B 1\n", 2, "positive image number, got '0'"),
        ("1 1\nA 1 2\nA 1 B x\n", 3, "positive image number, got 'x'"),
        ("1 1\n\nA 1 2\n\nA 1 B -1\n", 5, "positive image number"),  # blank lines still count
        ("1 1\nA 1 2\nA 1 B 2\nC 1 2\n", 4, "end of the file"),
        ("1 2\nA 1 2\nB 1 2\nA 1 B 1\n", 4, "ends after 3 pairs, expected 4"),
    ],
)
def test_malformed_pairs_name_file_and_line(
    tmp_path: Path, content: str, line: int | None, fragment: str
) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=fragment) as info:
        read_pairs(path)
    assert str(path) in str(info.value)
    if line is not None:
        assert f"line {line}:" in str(info.value)


def test_missing_pairs_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read pairs file"):
        read_pairs(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    ("content", "folds", "same"),
    [
        ("2 1\nA 1 2\nA 1 B 1\nC 1 2\nC 2 D 1\n", [0, 0, 1, 1], [True, False, True, False]),
        ("2\nA 1 2\nB 1 2\nA 1 B 1\nC 1 D 1\n", [0, 0, 0, 0], [True, True, False, False]),  # View 1 header
    ],
)
def test_headers(tmp_path: Path, content: str, folds: list[int], same: list[bool]) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(content)
    pairs = read_pairs(path)
    assert pairs.fold.tolist() == folds
    assert pairs.same.tolist() == same
    assert pairs.left[0] == "A/A_0001.jpg"


# --- evaluate on a synthetic LFW --------------------------------------------------------------------

PEOPLE = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay"]
# two folds; in each, three same-person lines then three different-person lines
SMALL_PAIRS = """2 3
Ann 1 2
Bob 1 2
Cid 1 2
Ann 1 Bob 1
Cid 2 Dee 1
Eve 1 Fay 2
Dee 1 2
Eve 1 3
Fay 2 3
Ann 3 Fay 1
Bob 3 Eve 2
Cid 3 Dee 3
"""


def make_lfw(root: Path, people: list[str] = PEOPLE, per_person: int = 3, seed: int = 0) -> Path:
    """One folder per person; each person's images share an 8x8 pattern, plus per-image noise."""
    rng = np.random.default_rng(seed)
    for name in people:
        pattern = cv2.resize(rng.uniform(40, 215, (8, 8)), (64, 64), interpolation=cv2.INTER_NEAREST)
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, per_person + 1):
            image = np.clip(pattern + rng.normal(0, 8, pattern.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{name}_{i:04d}.jpg"), image)
    return root


class ThumbnailEmbedder:
    """A real, cheap embedding: the mean-removed 8x8 grey thumbnail, L2-normalised (64-D).

    Images of people in ``fail`` are flagged as failed detections. Counts calls and images.
    """

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.calls = 0
        self.images = 0

    def __call__(self, paths: list[Path]) -> EmbedResult:
        self.calls += 1
        self.images += len(paths)
        rows = []
        for path in paths:
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            assert grey is not None, f"cv2 could not read {path}"
            thumb = cv2.resize(grey, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
            thumb -= thumb.mean()
            rows.append(thumb / np.linalg.norm(thumb))
        failed = np.array([path.parent.name in self.fail for path in paths], bool)
        return EmbedResult(embeddings=np.stack(rows), failed=failed)


@pytest.fixture
def small_lfw(tmp_path: Path) -> tuple[LfwPairs, Path]:
    (tmp_path / "pairs.txt").write_text(SMALL_PAIRS)
    return read_pairs(tmp_path / "pairs.txt"), make_lfw(tmp_path / "images")


def test_evaluate_measures_and_caches(small_lfw: tuple[LfwPairs, Path], tmp_path: Path) -> None:
    pairs, root = small_lfw
    cache = tmp_path / "cache" / "emb.npz"
    embed = ThumbnailEmbedder(fail=("Bob",))
    first = evaluate(pairs, root, embed, model_name="thumb8", cache=cache, chunk_size=5)
    assert (embed.calls, embed.images) == (4, 18)  # 18 unique images in chunks of 5
    assert not first.from_cache
    assert first.kfold.mean == 1.0
    assert first.int8_kfold.mean == 1.0
    assert first.n_failed == 3
    assert first.embeddings.shape == (18, 64)
    assert first.images_per_second > 0
    assert cache.is_file()

    second = evaluate(pairs, root, embed, model_name="thumb8", cache=cache)
    assert embed.calls == 4  # nothing embedded again
    assert second.from_cache
    np.testing.assert_array_equal(second.distances, first.distances)
    np.testing.assert_array_equal(second.failed, first.failed)
    assert second.images_per_second == first.images_per_second  # the run that computed them


def _fewer_pairs(pairs: LfwPairs) -> LfwPairs:
    keep = np.arange(len(pairs)) != 0  # drops Ann_0002, used by the first pair only
    return LfwPairs(
        left=[p for p, k in zip(pairs.left, keep, strict=True) if k],
        right=[p for p, k in zip(pairs.right, keep, strict=True) if k],
        same=pairs.same[keep],
        fold=pairs.fold[keep],
    )


def _corrupt(pairs: LfwPairs, cache: Path) -> tuple[LfwPairs, str, str]:
    cache.write_bytes(b"PK\x03\x04 not really a zip file")
    return pairs, "thumb8", ""


# change(pairs, cache) -> (pairs, model_name, cache_tag) of the second run
Change = Callable[[LfwPairs, Path], tuple[LfwPairs, str, str]]


@pytest.mark.parametrize(
    ("change", "calls_again"),
    [
        pytest.param(lambda p, c: (p, "thumb8", ""), 0, id="nothing"),
        pytest.param(lambda p, c: (_fewer_pairs(p), "thumb8", ""), 1, id="image list"),
        pytest.param(lambda p, c: (p, "thumb8-v2", ""), 1, id="model name"),
        pytest.param(lambda p, c: (p, "thumb8", "align=similarity"), 1, id="cache tag"),
        pytest.param(_corrupt, 1, id="corrupt file"),
    ],
)
def test_stale_cache_is_recomputed(
    small_lfw: tuple[LfwPairs, Path], tmp_path: Path, change: Change, calls_again: int
) -> None:
    pairs, root = small_lfw
    cache = tmp_path / "emb.npz"
    embed = ThumbnailEmbedder()
    evaluate(pairs, root, embed, model_name="thumb8", cache=cache, progress=False)
    assert embed.calls == 1
    new_pairs, model_name, tag = change(pairs, cache)
    for run in range(2):  # the second run finds the rewritten cache
        again = evaluate(
            new_pairs, root, embed, model_name=model_name, cache=cache, cache_tag=tag, progress=False
        )
        assert embed.calls == 1 + calls_again
        assert again.from_cache == (run == 1 or calls_again == 0)
        assert len(again.images) == len(unique_images(new_pairs))


def test_evaluate_without_cache_embeds_every_time(small_lfw: tuple[LfwPairs, Path]) -> None:
    pairs, root = small_lfw
    embed = ThumbnailEmbedder()
    for _ in range(2):
        evaluate(pairs, root, embed, model_name="thumb8", progress=False)
    assert embed.calls == 2


def test_missing_images_say_which_root(small_lfw: tuple[LfwPairs, Path], tmp_path: Path) -> None:
    pairs, _ = small_lfw
    with pytest.raises(InputError, match=r"18 of 18 LFW images are missing.*pass the folder"):
        evaluate(pairs, tmp_path / "elsewhere", ThumbnailEmbedder(), model_name="thumb8", progress=False)


def test_embed_returning_wrong_rows_is_caught(small_lfw: tuple[LfwPairs, Path]) -> None:
    pairs, root = small_lfw

    def one_row(paths: list[Path]) -> EmbedResult:
        return EmbedResult(embeddings=np.eye(1, 4, dtype=np.float32), failed=np.zeros(1, bool))

    with pytest.raises(ValueError, match="expected 18 rows for 18 paths, got 1"):
        evaluate(pairs, root, one_row, model_name="bad", chunk_size=100, progress=False)


@pytest.mark.parametrize(
    ("embeddings", "failed", "match"),
    [
        (np.ones((2, 4)), np.zeros(2, bool), "L2-normalised"),
        (np.eye(2), np.zeros(3, bool), r"expected \(2,\) bool"),
        (np.eye(2), np.zeros(2, int), r"expected \(2,\) bool"),
        (np.ones(4), np.zeros(1, bool), r"expected \(N, D\)"),
    ],
)
def test_embed_result_validation(embeddings: np.ndarray, failed: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmbedResult(embeddings=embeddings, failed=failed)
