"""Open-set thresholds: how far a probe may be from its nearest enrolled person and still be named.

A 1:1 verification threshold (the model card's, chosen for accuracy on LFW pairs) names far too
many strangers once thousands of people are enrolled: a stranger is compared with every one of
them and only has to come close to one. Identification is therefore calibrated on its own error,
the **false-positive identification rate** (FPIR): the fraction of strangers given a name.

* With stranger embeddings (people not enrolled), each stranger's nearest gallery distance is an
  impostor score; the threshold is the ``fpir`` quantile of those scores: a fraction ``fpir`` of
  strangers comes closer than it.
* Without strangers, every enrolled person stands in for one (**leave-one-out**): their nearest
  *other* enrolled person is the impostor score. A gallery of ``N`` people stands in for a gallery
  of ``N - 1``, close enough from a few hundred people on.
* Without any (a small gallery, or none calibrated yet), ``threshold_from_far`` reads the model's
  1:1 impostor curve (``ModelCard.far_thresholds``): a stranger compared with ``N`` people is named
  with probability about ``1 - (1 - FAR)^N``, so the per-comparison FAR is ``1 - (1 - fpir)^(1/N)``.

A face is named when its distance is at most the threshold and, with a margin, the next person is at
least that much farther (``streamproc.gallery.base.named``). The calibration is made for that margin:
a stranger whose two nearest people are a near-tie is never named, so it does not count against the
target and the threshold can be looser for the same FPIR. ``bench/lfw_identification.py`` (1,680 LFW
people enrolled, 7,484 probes, 4,069 strangers) at FPIR 1%: margin 0.1 names 0.7751 of the probes
right and 13 wrong, against 0.7655 and 17 without; at FPIR 10% 0.9198 and 45 against 0.9213 and 75.

Example:
    >>> threshold_for_fpir(np.array([0.5, 0.9, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9]), 0.1)
    0.7
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamproc.errors import InputError

DEFAULT_FPIR = 0.01
MIN_IMPOSTORS = 50  # fewer impostor scores than this say little about a 1% tail


@dataclass(frozen=True)
class Calibration:
    """An open-set threshold and how it was measured, stored with the gallery version."""

    model_version: str
    threshold: float  # squared L2: named when the nearest distance is at most this
    fpir: float  # target fraction of strangers named
    gallery_size: int  # identities enrolled when it was measured
    impostors: int  # impostor scores it rests on
    method: str  # "strangers", "leave-one-out" or "model FAR curve"
    measured_fpir: float = float("nan")  # fraction of the impostors named at the threshold
    created: float = 0.0  # unix time
    margin: float = 0.0  # the lead over the next person it was calibrated for (older ones: none)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _check_fpir(fpir: float) -> float:
    if not (0.0 < fpir < 1.0) or math.isnan(fpir):
        raise InputError(f"fpir: expected a fraction between 0 and 1 (e.g. 0.01), got {fpir}")
    return float(fpir)


def threshold_for_fpir(impostor_nearest: np.ndarray, fpir: float) -> float:
    """The largest threshold at which at most ``fpir`` of the impostors are named (``d <= t``):
    midway between the last impostor score allowed in and the first one kept out. An infinite score
    is an impostor never named at any threshold (a near-tie under the margin): it counts in the total."""
    _check_fpir(fpir)
    scores = np.sort(np.asarray(impostor_nearest, np.float64).reshape(-1))
    total = int(np.sum(~np.isnan(scores)))
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        raise InputError("calibration: no impostor scores (need strangers, or a gallery of 2+ people)")
    allowed = math.floor(fpir * total + 1e-9)  # impostors that may be named
    if allowed >= len(scores):
        return float(scores[-1])
    below = scores[allowed - 1] if allowed > 0 else max(0.0, scores[0] - 0.05)
    return round(float(0.5 * (below + scores[allowed])), 6)


def nearest_two(
    rows: np.ndarray, owners: np.ndarray, probes: np.ndarray, own: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances from each of ``probes`` (unit vectors) to its nearest and second-nearest
    *person* among ``rows`` (unit vectors, ``owners[i]`` the person of row ``i``; a person with several
    rows is as near as the nearest of them); inf where there is no such person. ``own[j]``, if given,
    is a person probe ``j`` must not be compared with (leave-one-out)."""
    rows, probes = np.asarray(rows, np.float32), np.asarray(probes, np.float32)
    people, code = np.unique(np.asarray(owners), return_inverse=True)
    order = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(code[order]) != 0])
    mine = None if own is None else np.searchsorted(people, np.asarray(own))
    out = np.full((len(probes), 2), np.inf)
    for start in range(0, len(probes), 1024):
        sims = probes[start : start + 1024] @ rows[order].T
        dist = np.maximum(2.0 - 2.0 * np.maximum.reduceat(sims, starts, axis=1), 0.0).astype(np.float64)
        if mine is not None:
            dist[np.arange(len(dist)), mine[start : start + 1024]] = np.inf
        take = min(2, dist.shape[1])
        nearest = np.sort(np.partition(dist, take - 1, axis=1)[:, :take], axis=1)
        out[start : start + len(dist), :take] = nearest
    return out[:, 0], out[:, 1]


def impostor_scores(nearest: np.ndarray, second: np.ndarray, margin: float) -> np.ndarray:
    """What calibration ranks: each impostor's nearest distance, inf where the margin keeps it unnamed."""
    return np.where(second - nearest >= margin, nearest, np.inf)


def calibrate(
    model_version: str,
    gallery_rows: np.ndarray,
    owners: np.ndarray,
    fpir: float = DEFAULT_FPIR,
    strangers: np.ndarray | None = None,
    max_probes: int = 20_000,
    seed: int = 0,
    margin: float = 0.0,
) -> Calibration:
    """Calibrate a gallery (``gallery_rows`` unit vectors, ``owners[i]`` the person of row ``i``) to
    ``fpir`` for the naming rule with ``margin``, from ``strangers`` (their embeddings) or
    leave-one-out (see the module doc)."""
    _check_fpir(fpir)
    owners = np.asarray(owners)
    people = len(set(owners.tolist()))
    rng = np.random.default_rng(seed)
    if strangers is not None and len(strangers):
        probes = np.asarray(strangers, np.float32)
        if len(probes) > max_probes:
            probes = probes[rng.choice(len(probes), max_probes, replace=False)]
        nearest, second = nearest_two(gallery_rows, owners, probes)
        method = "strangers"
    else:
        if people < 2:
            raise InputError("calibration: a gallery of one person has no impostors; give --strangers")
        picked = np.arange(len(gallery_rows))
        if len(picked) > max_probes:
            picked = rng.choice(picked, max_probes, replace=False)
        rows = np.asarray(gallery_rows, np.float32)
        nearest, second = nearest_two(rows, owners, rows[picked], own=owners[picked])
        method = "leave-one-out"
    scores = impostor_scores(nearest, second, margin)
    if len(scores) < MIN_IMPOSTORS:
        raise InputError(
            f"calibration: only {len(scores)} impostor scores (need {MIN_IMPOSTORS}); give --strangers "
            "with more photos, or leave the gallery uncalibrated (the model's FAR curve is used)"
        )
    threshold = threshold_for_fpir(scores, fpir)
    return Calibration(
        model_version=model_version,
        threshold=threshold,
        fpir=fpir,
        gallery_size=people,
        impostors=len(scores),
        method=method,
        measured_fpir=round(float(np.mean(scores <= threshold)), 6),
        created=time.time(),
        margin=float(margin),
    )


def threshold_from_far(far_thresholds: dict[str, float], fpir: float, gallery_size: int) -> float | None:
    """The threshold for ``fpir`` at ``gallery_size`` from a model's 1:1 curve ``{"1e-3": t, ...}``
    (log-linear between its points; clamped to its range). None without a curve."""
    _check_fpir(fpir)
    if not far_thresholds:
        return None
    points = sorted((float(far), float(t)) for far, t in far_thresholds.items())
    want = 1.0 - (1.0 - fpir) ** (1.0 / max(gallery_size, 1))
    fars = np.log10([p[0] for p in points])
    values = [p[1] for p in points]
    return round(float(np.interp(math.log10(want), fars, values)), 6)
