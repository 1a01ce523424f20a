"""Which model versions may be compared, and the matcher refusing the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import nn

from streamproc.errors import IncompatibleModels
from streamproc.gallery.index import GalleryIndex
from streamproc.models import compat, registry
from streamproc.models.checkpoint import ModelCard, save_checkpoint
from streamproc.stages.match import MatchStage
from streamproc.types import Decision, FrameBatch


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMPROC_CACHE_DIR", str(tmp_path))
    return tmp_path


def _register(
    cache: Path, name: str, version: str, compatible: tuple[str, ...], thresholds: dict[str, float]
) -> None:
    card = ModelCard(
        name=name,
        version=version,
        arch="nns2",
        embedding_dim=4,
        input_size=140,
        compatible_with=compatible,
        thresholds=thresholds,
    )
    registry.register(name, save_checkpoint(cache / f"{name}.pt", nn.Linear(1, 1), card))


@pytest.mark.parametrize(
    ("probe", "gallery", "expected"),
    [
        ("v1", "v1", 1.159),  # the built-in card
        ("h2", "v1", 0.9),  # the harmonic card names v1
        ("h2", "h2", 1.0),
        ("v1", "h2", 0.95),  # v1 probes against an h2 gallery: the h2 card's as-gallery entry
        ("p2", "v1", IncompatibleModels),  # trained without v1: never compared
        ("v1", "p2", IncompatibleModels),
    ],
)
def test_pair_thresholds_from_cards(cache: Path, probe: str, gallery: str, expected: object) -> None:
    _register(cache, "harmonic", "h2", ("h2", "v1"), {"h2": 1.0, "v1": 0.9, "as-gallery:v1": 0.95})
    _register(cache, "plain", "p2", ("p2",), {"p2": 1.1})
    if isinstance(expected, float):
        assert compat.threshold(probe, gallery) == expected
        assert compat.compatible(probe, gallery)
    else:
        with pytest.raises(IncompatibleModels, match="never compared"):
            compat.threshold(probe, gallery)
        assert not compat.compatible(probe, gallery)


def test_recorded_calibration_wins_and_makes_a_pair_compatible(cache: Path) -> None:
    _register(cache, "plain", "p2", ("p2",), {"p2": 1.1})
    compat.record([compat.PairCalibration("p2", "v1", 0.7, 1e-3, 0.9, 0.5, 0.001, "test")])
    assert compat.threshold("p2", "v1") == 0.7
    assert registry.name_for("p2") == "plain" and registry.name_for("plain") == "plain"
    (compat.path()).write_text("{not json")
    with pytest.raises(Exception, match="corrupt"):
        compat.threshold("p2", "v1")


def _decision(version: str, embedding: list[float], track: int = 0, revision: int = 0) -> Decision:
    return Decision(
        "cam",
        track,
        0.0,
        1.0,
        None,
        float("nan"),
        5,
        version,
        "",
        revision=revision,
        embedding=np.array(embedding, np.float32),
    )


def test_matcher_uses_the_pair_threshold_and_refuses_an_uncalibrated_pair() -> None:
    index = GalleryIndex.from_arrays(["id-ada"], ["Ada"], np.eye(1, 4, dtype=np.float32), model_version="v1")
    pairs = {("h2", "v1"): 0.5}

    def pair(probe: str, gallery: str) -> float:
        if (probe, gallery) not in pairs:
            raise IncompatibleModels(f"{probe} vs {gallery}")
        return pairs[(probe, gallery)]

    stage = MatchStage(1.0, index, pair_threshold=pair)
    near = [0.8, 0.6, 0.0, 0.0]  # squared distance 0.04 + 0.36 = 0.40 from Ada (1, 0, 0, 0)
    batch = FrameBatch("cam", np.zeros((0, 1, 1, 3), np.uint8), [], decisions=[_decision("h2", near)])
    (out,) = stage(batch).decisions
    assert out.identity == "Ada" and out.model_version == "h2" and out.gallery_version == "v1"
    pairs[("h2", "v1")] = 0.3  # a stricter calibration: same probe is now unknown
    far = FrameBatch("cam", np.zeros((0, 1, 1, 3), np.uint8), [], decisions=[_decision("h2", near, track=1)])
    assert stage(far).decisions[0].identity is None
    bad = FrameBatch("cam", np.zeros((0, 1, 1, 3), np.uint8), [], decisions=[_decision("p2", near, track=2)])
    with pytest.raises(IncompatibleModels):
        stage(bad)


def test_a_track_going_on_under_the_new_model_repeats_nothing() -> None:
    index = GalleryIndex.from_arrays(["id-ada"], ["Ada"], np.eye(1, 4, dtype=np.float32), model_version="v1")
    stage = MatchStage(1.0, index, pair_threshold=lambda p, g: 1.0)
    ada = [1.0, 0.0, 0.0, 0.0]
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    assert len(stage(FrameBatch("cam", empty, [], decisions=[_decision("v1", ada)])).decisions) == 1
    # the same track's first v2 decision names Ada again: nothing new to say
    assert stage(FrameBatch("cam", empty, [], decisions=[_decision("h2", ada)])).decisions == []
    # ...but a different answer under v2 is an update
    other = [0.0, 1.0, 0.0, 0.0]
    (update,) = stage(FrameBatch("cam", empty, [], decisions=[_decision("h2", other, revision=1)])).decisions
    assert update.identity is None
