"""Open-set calibration at a target FPIR, and the one threshold policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import streamproc
from streamproc.errors import InputError
from streamproc.gallery.calibrate import (
    Calibration,
    calibrate,
    impostor_scores,
    nearest_two,
    threshold_for_fpir,
    threshold_from_far,
)
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.policy import resolve
from streamproc.models.checkpoint import ModelCard

PROFILES = Path(streamproc.__file__).parent / "configs"
MARGIN = GalleryConfig().margin


def unit_rows(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("scores", "fpir", "expected"),
    [
        (np.arange(1, 101) / 100, 0.01, 0.015),  # exactly one of 100 impostors named
        (np.arange(1, 101) / 100, 0.1, 0.105),
        (np.arange(1, 11) / 10, 0.01, 0.075),  # none of 10 may be named: under the closest
    ],
)
def test_threshold_names_at_most_the_target_fraction(
    scores: np.ndarray, fpir: float, expected: float
) -> None:
    threshold = threshold_for_fpir(scores, fpir)
    assert threshold == pytest.approx(expected)
    assert np.mean(scores <= threshold) <= fpir


@pytest.mark.parametrize("fpir", [0.0, 1.0, -0.1, float("nan")])
def test_fpir_must_be_a_fraction(fpir: float) -> None:
    with pytest.raises(InputError, match="fpir"):
        threshold_for_fpir(np.ones(10), fpir)


def test_leave_one_out_ignores_the_persons_own_rows() -> None:
    rows = unit_rows(4)
    rows[1] = rows[0]  # person a has two identical rows
    owners = np.array(["a", "a", "b", "c"])
    expected = np.sort(np.maximum(2 - 2 * rows[0] @ rows[2:].T, 0))
    nearest, second = nearest_two(rows, owners, rows[:1], own=owners[:1])
    assert [nearest[0], second[0]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_the_second_nearest_is_another_person_not_another_row() -> None:
    rows = unit_rows(5)
    owners = np.array(["a", "b", "a", "c", "b"])
    probe = rows[2:3] * 0.9 + rows[0:1] * 0.1  # nearest rows are both a's
    probe /= np.linalg.norm(probe)
    dist = np.maximum(2 - 2 * probe @ rows.T, 0)[0]
    per_person = sorted(dist[owners == o].min() for o in ("a", "b", "c"))
    nearest, second = nearest_two(rows, owners, probe)
    assert [nearest[0], second[0]] == pytest.approx(per_person[:2], abs=1e-5)
    lone, none = nearest_two(rows[:1], owners[:1], probe)
    assert np.isfinite(lone[0]) and none[0] == np.inf


def test_near_ties_count_as_strangers_never_named() -> None:
    """A stranger whose two nearest people are within the margin is never named: it counts in the
    total, so the threshold for the same FPIR is looser, and still names at most that FPIR."""
    nearest = np.arange(1, 101) / 100
    second = nearest + np.where(np.arange(100) % 2 == 0, 0.01, 1.0)  # every other one a near-tie
    scores = impostor_scores(nearest, second, margin=0.1)
    assert np.isinf(scores[::2]).all() and (scores[1::2] == nearest[1::2]).all()
    loose, plain = threshold_for_fpir(scores, 0.02), threshold_for_fpir(nearest, 0.02)
    assert loose > plain
    assert np.mean(scores <= loose) <= 0.02


def test_calibration_with_a_margin_holds_on_new_strangers() -> None:
    gallery = unit_rows(300, seed=1)
    strangers, fresh = unit_rows(4000, seed=2), unit_rows(4000, seed=3)
    plain = calibrate("v1", gallery, np.arange(300), fpir=0.01, strangers=strangers)
    cal = calibrate("v1", gallery, np.arange(300), fpir=0.01, strangers=strangers, margin=0.3)
    assert cal.margin == 0.3 and cal.threshold > plain.threshold and cal.measured_fpir <= 0.01
    named = impostor_scores(*nearest_two(gallery, np.arange(300), fresh), 0.3) <= cal.threshold
    assert 0.003 <= np.mean(named) <= 0.02


def test_calibration_from_strangers_holds_on_new_strangers() -> None:
    gallery = unit_rows(500, seed=1)
    strangers, fresh = unit_rows(4000, seed=2), unit_rows(4000, seed=3)
    cal = calibrate("v1", gallery, np.arange(500), fpir=0.01, strangers=strangers)
    assert cal.method == "strangers" and cal.impostors == 4000 and cal.measured_fpir <= 0.01
    nearest = np.maximum(2 - 2 * (fresh @ gallery.T).max(axis=1), 0)
    assert 0.003 <= np.mean(nearest <= cal.threshold) <= 0.02  # it generalises to strangers not seen


def test_too_few_impostors_is_refused() -> None:
    with pytest.raises(InputError, match="impostor scores"):
        calibrate("v1", unit_rows(5), np.arange(5), fpir=0.01)


def test_far_curve_threshold_falls_as_the_gallery_grows() -> None:
    curve = {"1e-2": 1.2, "1e-3": 1.0, "1e-4": 0.8, "1e-5": 0.6}
    small, large = threshold_from_far(curve, 0.01, 1), threshold_from_far(curve, 0.01, 1000)
    assert small == pytest.approx(1.2) and large == pytest.approx(0.6, abs=0.01)
    assert threshold_from_far({}, 0.01, 10) is None


CARD = ModelCard(
    "m", "v1", "x", 128, 160, thresholds={"v1": 1.16}, far_thresholds={"1e-2": 1.2, "1e-3": 1.0, "1e-4": 0.8}
)


def test_policy_order() -> None:
    cal = Calibration("v1", 0.9, 0.01, gallery_size=100, impostors=100, method="strangers", margin=MARGIN)
    assert resolve(GalleryConfig(threshold=0.5), CARD, "v1", "v1", 100, cal).value == 0.5
    assert resolve(GalleryConfig(), CARD, "v1", "v1", 100, cal).value == 0.9
    other_target = resolve(GalleryConfig(fpir=0.05), CARD, "v1", "v1", 100, cal)
    assert "FAR curve" in other_target.source
    assert resolve(GalleryConfig(), CARD, "v1", "v1", 10).value == pytest.approx(1.0, abs=0.01)
    bare = ModelCard("m", "v1", "x", 128, 160, thresholds={"v1": 1.16})
    assert resolve(GalleryConfig(), bare, "v1", "v1", 10).value == 1.16


def test_a_calibration_for_another_margin_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    old = Calibration("v1", 0.9, 0.01, gallery_size=100, impostors=100, method="strangers")  # margin 0
    resolved = resolve(GalleryConfig(margin=0.15), CARD, "v1", "v1", 100, old)
    assert "FAR curve" in resolved.source and resolved.margin == 0.15
    assert "re-run `streamproc gallery calibrate`" in caplog.text
    same = resolve(GalleryConfig(margin=0.0), CARD, "v1", "v1", 100, old)
    assert same.value == 0.9 and same.margin == 0.0


def test_policy_warns_when_the_gallery_outgrew_its_calibration(caplog: pytest.LogCaptureFixture) -> None:
    cal = Calibration("v1", 0.9, 0.01, gallery_size=100, impostors=100, method="strangers", margin=MARGIN)
    resolve(GalleryConfig(), CARD, "v1", "v1", 250, cal)
    assert "re-run `streamproc gallery calibrate`" in caplog.text


@pytest.mark.parametrize("model", ["facenet-irv1-128", "mobilefacenet-192"])
def test_every_profile_sets_open_set_thresholds_by_gallery_size(model: str) -> None:
    """No shipped profile pins a 1:1 threshold: a 1:1 threshold names most strangers once a gallery holds
    thousands of people. Each built-in model's card has the impostor curve the policy needs."""
    from streamproc.config import load_config
    from streamproc.models.registry import BUILTIN

    for profile in (None, PROFILES / "realtime.yaml"):
        assert load_config(profile).gallery.threshold is None, profile
    card = BUILTIN[model].card
    small, large = (resolve(GalleryConfig(), card, card.version, card.version, n) for n in (5, 1680))
    assert "FAR curve" in small.source and large.value < small.value < card.thresholds[card.version]
