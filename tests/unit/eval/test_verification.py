"""Verification metrics against values computed by hand on tiny pair sets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from streamproc.eval.verification import (
    best_threshold,
    kfold_accuracy,
    roc_curve,
    squared_l2,
    val_at_far,
    val_far,
)


def make_pairs(same_dists: list[float], diff_dists: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances and labels: the same-person pairs first, then the different-person pairs."""
    dist = np.array(same_dists + diff_dists, np.float64)
    same = np.array([True] * len(same_dists) + [False] * len(diff_dists))
    return dist, same


# 4 same pairs and 6 different pairs; sorted: .1S .3S .4D .5S .7D .9S 1.0D 1.2D 1.5D 2.0D
TEN = make_pairs([0.1, 0.3, 0.5, 0.9], [0.4, 0.7, 1.0, 1.2, 1.5, 2.0])


def test_squared_l2_rows() -> None:
    a = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(squared_l2(a, b), [0.0, 2.0, 25.0])


@pytest.mark.parametrize(
    ("threshold", "val", "far"),
    [
        (0.05, 0.0, 0.0),  # below everything: nothing accepted
        (0.35, 2 / 4, 0 / 6),
        (0.5, 3 / 4, 1 / 6),  # dist == threshold is accepted
        (1.0, 4 / 4, 3 / 6),
        (2.0, 1.0, 1.0),
    ],
)
def test_val_far_by_hand(threshold: float, val: float, far: float) -> None:
    assert val_far(*TEN, threshold) == pytest.approx((val, far))


def test_roc_curve_by_hand() -> None:
    thresholds, val, far = roc_curve(*TEN)
    np.testing.assert_allclose(thresholds, [0.1, 0.3, 0.4, 0.5, 0.7, 0.9, 1.0, 1.2, 1.5, 2.0])
    np.testing.assert_allclose(val, np.array([1, 2, 2, 3, 3, 4, 4, 4, 4, 4]) / 4)
    np.testing.assert_allclose(far, np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6]) / 6)


def test_roc_curve_merges_ties() -> None:
    thresholds, val, far = roc_curve(*make_pairs([0.2, 0.2], [0.2, 0.6]))
    np.testing.assert_allclose(thresholds, [0.2, 0.6])
    np.testing.assert_allclose(val, [1.0, 1.0])
    np.testing.assert_allclose(far, [0.5, 1.0])


@pytest.mark.parametrize(
    ("pairs", "target", "val", "threshold"),
    [
        (TEN, 0.0, 2 / 4, 0.3),  # FAR 0: last threshold before the first different pair (0.4)
        (TEN, 1e-3, 2 / 4, 0.3),  # 6 different pairs < 1/1e-3: FAR can only be 0
        (TEN, 0.2, 3 / 4, 0.5),  # one false accept allowed (1/6 <= 0.2)
        (TEN, 2 / 6, 4 / 4, 0.9),  # exactly two allowed: equality counts as admissible
        (TEN, 1.0, 1.0, 2.0),
        # a tie of a same and a different pair at 0.4 pushes FAR over 0: the tied same pair is lost
        (make_pairs([0.1, 0.4], [0.4, 0.8]), 0.0, 1 / 2, 0.1),
    ],
)
def test_val_at_far_by_hand(
    pairs: tuple[np.ndarray, np.ndarray], target: float, val: float, threshold: float
) -> None:
    got_val, got_threshold = val_at_far(*pairs, target_far=target)
    assert got_val == pytest.approx(val)
    assert got_threshold == pytest.approx(threshold)
    assert val_far(*pairs, got_threshold)[0] == pytest.approx(val)  # the threshold reproduces VAL


def test_val_at_far_nothing_admissible() -> None:
    """The closest pair is a different pair: VAL is 0 at a threshold that accepts nothing."""
    dist, same = make_pairs([0.5], [0.2])
    val, threshold = val_at_far(dist, same, target_far=0.0)
    assert val == 0.0
    assert threshold < 0.2
    assert val_far(dist, same, threshold) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("pairs", "threshold", "why"),
    [
        (make_pairs([0.2, 0.4], [1.0]), 0.7, "separable: midpoint of the gap 0.4 | 1.0"),
        (make_pairs([0.2, 0.4, 0.6, 0.7], [0.5, 1.0, 1.1]), 0.85, "6/7 at 0.85 beats 5/7 at 0.45"),
        # TEN: 8/10 correct at 0.35, 0.6 and 0.95; ties go to the smallest threshold
        (TEN, 0.35, "ties resolved to the smallest"),
        (make_pairs([2.0], [1.0]), 0.5, "inverted: accepting nothing or everything ties; smallest"),
    ],
)
def test_best_threshold_by_hand(pairs: tuple[np.ndarray, np.ndarray], threshold: float, why: str) -> None:
    assert best_threshold(*pairs) == pytest.approx(threshold), why


def test_kfold_by_hand() -> None:
    """Three folds, the third holding one different pair at 0.3 that any sane threshold accepts.

    Every training set puts its best threshold at 0.7 (midpoint of 0.4 and 1.0), so the accuracies
    are 1, 1 and 4/5: mean 14/15, sem 1/15. The VAL@FAR=1e-3 threshold is 0.2 when the training set
    holds the 0.3 different pair (folds 0 and 1) and 0.4 otherwise (fold 2).
    """
    fold_dists = [([0.2, 0.4], [1.0, 1.2]), ([0.2, 0.4], [1.0, 1.2]), ([0.2, 0.4], [1.0, 1.2, 0.3])]
    parts = [make_pairs(s, d) for s, d in fold_dists]
    dist = np.concatenate([p[0] for p in parts])
    same = np.concatenate([p[1] for p in parts])
    fold = np.repeat([0, 1, 2], [len(p[0]) for p in parts])
    result = kfold_accuracy(dist, same, fold)
    np.testing.assert_allclose(result.accuracies, [1.0, 1.0, 0.8])
    np.testing.assert_allclose(result.thresholds, [0.7, 0.7, 0.7])
    assert result.mean == pytest.approx(14 / 15)
    assert result.sem == pytest.approx(1 / 15)
    np.testing.assert_allclose(result.val_thresholds, [0.2, 0.2, 0.4])
    np.testing.assert_allclose(result.val, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(result.far, [0.0, 0.0, 1 / 3])
    assert result.folds.tolist() == [0, 1, 2]


def test_kfold_uses_only_other_folds() -> None:
    """Fold 1 alone would choose a threshold near 2; the other folds choose near 0.5, and fold 1 fails."""
    dist = np.array([0.2, 0.8, 0.3, 0.9, 1.8, 2.2])
    same = np.array([True, False, True, False, True, False])
    fold = np.array([0, 0, 2, 2, 1, 1])
    result = kfold_accuracy(dist, same, fold)
    assert result.folds.tolist() == [0, 1, 2]
    np.testing.assert_allclose(result.accuracies, [1.0, 0.5, 1.0])


GOOD_DIST, GOOD_SAME = make_pairs([0.1, 0.2], [0.8, 0.9])
GOOD_FOLD = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: squared_l2(np.zeros((2, 3)), np.zeros((2, 4))), ValueError, "same shape"),
        (lambda: squared_l2(np.zeros(3), np.zeros(3)), ValueError, r"\(N, D\)"),
        (lambda: val_far(GOOD_DIST.reshape(2, 2), GOOD_SAME, 0.5), ValueError, "1-D"),
        (lambda: val_far(GOOD_DIST, GOOD_SAME.astype(int), 0.5), ValueError, "bool labels"),
        (lambda: val_far(GOOD_DIST, GOOD_SAME[:3], 0.5), ValueError, "to match dist"),
        (lambda: val_far(np.array([0.1, np.nan, 0.8, 0.9]), GOOD_SAME, 0.5), ValueError, "finite"),
        (lambda: roc_curve(GOOD_DIST, np.ones(4, bool)), ValueError, "at least one same and one different"),
        (lambda: best_threshold(GOOD_DIST, np.zeros(4, bool)), ValueError, "got 0 same of 4"),
        (lambda: val_at_far(GOOD_DIST, GOOD_SAME, target_far=1.5), ValueError, r"in \[0, 1\]"),
        (lambda: kfold_accuracy(GOOD_DIST, GOOD_SAME, np.zeros(4, int)), ValueError, "at least 2 folds"),
        (lambda: kfold_accuracy(GOOD_DIST, GOOD_SAME, GOOD_FOLD[:3]), ValueError, "integer labels of shape"),
        (lambda: kfold_accuracy(GOOD_DIST, GOOD_SAME, GOOD_FOLD * 0.5), ValueError, "integer labels"),
        (
            lambda: kfold_accuracy(GOOD_DIST, GOOD_SAME, np.array([0, 0, 1, 1])),
            ValueError,
            "fold 0: expected",
        ),
        (lambda: val_far(GOOD_DIST, GOOD_SAME, 0.5), None, ""),
        (lambda: kfold_accuracy(GOOD_DIST, GOOD_SAME, GOOD_FOLD), None, ""),
    ],
)
def test_input_validation(call: Callable[[], object], error: type[Exception] | None, match: str) -> None:
    if error is None:
        call()
    else:
        with pytest.raises(error, match=match):
            call()
