"""The Stage base class: it checks types and lets a bug be a bug."""

from __future__ import annotations

import numpy as np
import pytest

from streamproc.errors import ConfigError
from streamproc.stages.base import Stage
from streamproc.types import FrameBatch


class Divide(Stage):
    """Divides by the number of faces: a bug on a batch without faces."""

    name = "divide"

    def process(self, batch: FrameBatch) -> FrameBatch:
        _ = 1 / len(batch.faces)
        return batch


class Refuse(Stage):
    name = "refuse"

    def process(self, batch: FrameBatch) -> FrameBatch:
        raise ConfigError("set refuse.enabled=false")


def make_batch() -> FrameBatch:
    return FrameBatch(stream_id="cam", frames=np.zeros((2, 8, 8, 3), np.uint8), pts=np.array([1.5, 1.54]))


def test_a_bug_in_a_stage_keeps_its_type_and_says_where() -> None:
    with pytest.raises(ZeroDivisionError) as info:
        Divide()(make_batch())
    assert info.value.__notes__ == ["in stage=divide stream=cam pts=1.500"]


def test_a_streamproc_error_passes_through_unchanged() -> None:
    with pytest.raises(ConfigError, match=r"^set refuse.enabled=false$"):
        Refuse()(make_batch())


def test_a_batch_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="divide: expected FrameBatch, got list"):
        Divide()([])  # type: ignore[arg-type]
