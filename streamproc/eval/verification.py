"""Face verification metrics of the FaceNet paper (Schroff et al. 2015, section 4), in plain numpy.

A pair of faces is *accepted* as the same person when its squared L2 distance is at most a
threshold ``d``. With ``P_same`` the same-person pairs and ``P_diff`` the different-person pairs:

    VAL(d) = |TA(d)| / |P_same|     true accepts: same pairs with dist <= d
    FAR(d) = |FA(d)| / |P_diff|     false accepts: different pairs with dist <= d

Pairs at the same distance are always accepted or rejected together: no threshold can split a tie.

>>> dist = np.array([0.1, 0.3, 0.9, 1.2])
>>> same = np.array([True, True, False, False])
>>> val_far(dist, same, 0.5)
(1.0, 0.0)
>>> float(best_threshold(dist, same))
0.6
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TARGET_FAR = 1e-3


def squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise squared L2 distance of two ``(N, D)`` arrays, as float64 ``(N,)``.

    >>> squared_l2(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]))
    array([2.])
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"squared_l2: expected two (N, D) arrays of the same shape, got {a.shape} and {b.shape}"
        )
    diff = a - b
    return np.einsum("ij,ij->i", diff, diff)


def _check_pairs(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate distances and labels; return them as float64 and bool arrays."""
    dist = np.asarray(dist, np.float64)
    same = np.asarray(same)
    if dist.ndim != 1:
        raise ValueError(f"dist: expected a 1-D array of distances, got shape {dist.shape}")
    if same.dtype != np.bool_:
        raise ValueError(f"same: expected bool labels (True = same person), got dtype {same.dtype}")
    if same.shape != dist.shape:
        raise ValueError(f"same: expected shape {dist.shape} to match dist, got {same.shape}")
    if not np.all(np.isfinite(dist)):
        raise ValueError(f"dist: expected finite distances, got {int(np.sum(~np.isfinite(dist)))} NaN/inf")
    n_same = int(same.sum())
    if n_same == 0 or n_same == len(same):
        raise ValueError(
            f"expected at least one same and one different pair, got {n_same} same of {len(same)} pairs"
        )
    return dist, same


def val_far(dist: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    """VAL and FAR when pairs with ``dist <= threshold`` are accepted.

    >>> val_far(np.array([0.2, 0.5, 0.4, 0.8]), np.array([True, True, False, False]), 0.4)
    (0.5, 0.5)
    """
    dist, same = _check_pairs(dist, same)
    accepted = dist <= threshold
    val = np.sum(accepted & same) / np.sum(same)
    far = np.sum(accepted & ~same) / np.sum(~same)
    return float(val), float(far)


def roc_curve(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VAL and FAR at every distinct distance used as threshold, thresholds ascending.

    Returns ``(thresholds, val, far)``, three float64 arrays of the same length; the last point
    accepts every pair (VAL = FAR = 1).

    >>> t, val, far = roc_curve(np.array([0.1, 0.3, 0.3]), np.array([True, False, True]))
    >>> t.tolist(), val.tolist(), far.tolist()
    ([0.1, 0.3], [0.5, 1.0], [0.0, 1.0])
    """
    dist, same = _check_pairs(dist, same)
    thresholds = np.unique(dist)
    accepted_same = np.searchsorted(np.sort(dist[same]), thresholds, side="right")
    accepted_diff = np.searchsorted(np.sort(dist[~same]), thresholds, side="right")
    return thresholds, accepted_same / np.sum(same), accepted_diff / np.sum(~same)


def val_at_far(
    dist: np.ndarray, same: np.ndarray, target_far: float = DEFAULT_TARGET_FAR
) -> tuple[float, float]:
    """VAL at the largest threshold whose FAR is at most ``target_far``; returns ``(val, threshold)``.

    Candidate thresholds are the distinct distances, so the threshold is always one of them and
    ``val_far(dist, same, threshold)`` reproduces ``val``. Ties: a different pair at the same distance
    as same pairs is accepted with them; if that pushes FAR over the target, the threshold falls
    below the tie and those same pairs count as rejected (the pessimistic choice).

    With ``m`` different pairs, FAR moves in steps of ``1/m``; when ``m < 1/target_far`` (e.g. 600
    pairs at 1e-3) the only admissible FAR is 0, and the threshold is the largest distance below the
    closest different pair. When even the smallest distance is a different pair, nothing can be
    accepted: the result is ``(0.0, t)`` with ``t`` just below the smallest distance.

    >>> dist = np.array([0.1, 0.3, 0.4, 0.5])
    >>> val_at_far(dist, np.array([True, True, False, True]), target_far=0.0)
    (0.6666666666666666, 0.3)
    """
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target_far: expected a rate in [0, 1], got {target_far}")
    thresholds, val, far = roc_curve(dist, same)
    admissible = np.flatnonzero(far <= target_far)  # FAR grows with the threshold: a prefix
    if len(admissible) == 0:
        return 0.0, float(np.nextafter(thresholds[0], -np.inf))
    last = admissible[-1]
    return float(val[last]), float(thresholds[last])


def _accuracy_at(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of pairs classified correctly at each threshold (vectorised over thresholds)."""
    true_accepts = np.searchsorted(np.sort(dist[same]), thresholds, side="right")
    false_accepts = np.searchsorted(np.sort(dist[~same]), thresholds, side="right")
    true_rejects = np.sum(~same) - false_accepts
    return (true_accepts + true_rejects) / len(dist)


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """The threshold of highest accuracy, ``(TA + TR) / N``.

    Candidates are the midpoints between consecutive distinct distances, plus one point half a unit
    below the smallest (accept nothing) and one half a unit above the largest (accept everything).
    Midpoints keep the threshold away from the training distances, so a test pair at a training
    distance is not decided by rounding. Among candidates of equal accuracy the smallest wins: the
    most conservative one, with the lowest FAR.

    >>> float(best_threshold(np.array([0.2, 0.4, 1.0]), np.array([True, True, False])))
    0.7
    """
    dist, same = _check_pairs(dist, same)
    distinct = np.unique(dist)
    padded = np.concatenate([[distinct[0] - 1.0], distinct, [distinct[-1] + 1.0]])
    candidates = (padded[:-1] + padded[1:]) / 2
    return float(candidates[np.argmax(_accuracy_at(dist, same, candidates))])


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold results of the k-fold protocol; every array has one entry per fold, in fold order.

    Example:
        >>> same = np.array([True, False, True, False])
        >>> r = kfold_accuracy(np.array([0.1, 0.9, 0.2, 0.8]), same, np.array([0, 0, 1, 1]))
        >>> r.accuracies.tolist(), r.mean
        ([1.0, 1.0], 1.0)
    """

    folds: np.ndarray  # (k,) fold labels
    accuracies: np.ndarray  # (k,) test accuracy at the threshold chosen on the other folds
    thresholds: np.ndarray  # (k,) that accuracy threshold
    mean: float  # mean of accuracies
    sem: float  # standard error of the mean, std(ddof=1) / sqrt(k)
    val: np.ndarray  # (k,) test VAL at the training folds' VAL@FAR threshold
    far: np.ndarray  # (k,) test FAR at that threshold
    val_thresholds: np.ndarray  # (k,) that VAL@FAR threshold
    target_far: float  # the FAR target of val / far

    @property
    def val_mean(self) -> float:
        return float(np.mean(self.val))

    @property
    def val_sem(self) -> float:
        return float(np.std(self.val, ddof=1) / np.sqrt(len(self.val)))


def _check_folds(dist: np.ndarray, same: np.ndarray, fold: np.ndarray) -> np.ndarray:
    fold = np.asarray(fold)
    if fold.shape != dist.shape or not np.issubdtype(fold.dtype, np.integer):
        raise ValueError(
            f"fold: expected integer labels of shape {dist.shape}, got {fold.dtype} {fold.shape}"
        )
    labels = np.unique(fold)
    if len(labels) < 2:
        raise ValueError(f"fold: expected at least 2 folds, got {len(labels)}")
    for label in labels:
        n_same = int(np.sum(same[fold == label]))
        if n_same in (0, int(np.sum(fold == label))):
            raise ValueError(
                f"fold {label}: expected at least one same and one different pair, "
                f"got {n_same} same of {int(np.sum(fold == label))}"
            )
    return labels


def kfold_accuracy(
    dist: np.ndarray, same: np.ndarray, fold: np.ndarray, target_far: float = DEFAULT_TARGET_FAR
) -> KFoldResult:
    """The LFW protocol: for each fold, choose thresholds on the other folds and test on this one.

    The accuracy threshold is ``best_threshold`` of the training folds; the VAL threshold is
    ``val_at_far(..., target_far)`` of the training folds, and the fold reports its own VAL and FAR
    there (so the test FAR may exceed the target).

    >>> dist = np.array([0.2, 0.9, 0.3, 0.6, 0.1, 1.0])
    >>> r = kfold_accuracy(dist, np.array([True, False] * 3), np.array([0, 0, 1, 1, 2, 2]))
    >>> r.accuracies.tolist()
    [1.0, 1.0, 1.0]
    """
    dist, same = _check_pairs(dist, same)
    labels = _check_folds(dist, same, fold)
    fold = np.asarray(fold)
    rows: list[tuple[float, float, float, float, float]] = []
    for label in labels:
        test = fold == label
        train = ~test
        threshold = best_threshold(dist[train], same[train])
        accuracy = float(np.mean((dist[test] <= threshold) == same[test]))
        _, val_threshold = val_at_far(dist[train], same[train], target_far)
        test_val, test_far = val_far(dist[test], same[test], val_threshold)
        rows.append((accuracy, threshold, test_val, test_far, val_threshold))
    acc, thr, val, far, val_thr = (np.array(column) for column in zip(*rows, strict=True))
    return KFoldResult(
        folds=labels,
        accuracies=acc,
        thresholds=thr,
        mean=float(np.mean(acc)),
        sem=float(np.std(acc, ddof=1) / np.sqrt(len(acc))),
        val=val,
        far=far,
        val_thresholds=val_thr,
        target_far=target_far,
    )
