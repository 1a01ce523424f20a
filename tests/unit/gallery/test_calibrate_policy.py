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
    nearest_other,
    threshold_for_fpir,
    threshold_from_far,
)
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.policy import resolve
from streamproc.models.checkpoint import ModelCard

PROFILES = Path(streamproc.__file__).parent / "configs"


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
    expected = np.maximum(2 - 2 * rows[0] @ rows[2:].T, 0).min()
    assert nearest_other(rows, owners)[0] == pytest.approx(expected, abs=1e-5)


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
    cal = Calibration("v1", 0.9, 0.01, gallery_size=100, impostors=100, method="strangers")
    assert resolve(GalleryConfig(threshold=0.5), CARD, "v1", "v1", 100, cal).value == 0.5
    assert resolve(GalleryConfig(), CARD, "v1", "v1", 100, cal).value == 0.9
    other_target = resolve(GalleryConfig(fpir=0.05), CARD, "v1", "v1", 100, cal)
    assert "FAR curve" in other_target.source
    assert resolve(GalleryConfig(), CARD, "v1", "v1", 10).value == pytest.approx(1.0, abs=0.01)
    bare = ModelCard("m", "v1", "x", 128, 160, thresholds={"v1": 1.16})
    assert resolve(GalleryConfig(), bare, "v1", "v1", 10).value == 1.16


def test_policy_warns_when_the_gallery_outgrew_its_calibration(caplog: pytest.LogCaptureFixture) -> None:
    cal = Calibration("v1", 0.9, 0.01, gallery_size=100, impostors=100, method="strangers")
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
