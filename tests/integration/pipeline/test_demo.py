"""The README's main job, end to end: enrol three of five people, synthesise a video with same-place
cuts, short appearances and strangers, run on Ray, score every appearance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.gallery.embedded import stop_embedded

pytestmark = pytest.mark.integration


@pytest.fixture
def own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("STREAMPROC_DATA_DIR", str(tmp_path))
    yield tmp_path
    stop_embedded()


def test_demo_names_the_enrolled_and_no_stranger(
    capsys: pytest.CaptureFixture[str], ray_cluster: None, own_data_dir: Path, celebrity_dir: Path
) -> None:
    code = main(["demo", "--set", "embedder.threads=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert (own_data_dir / "demo" / "demo.mp4").stat().st_size > 0
    summary = next(line for line in out.splitlines() if line.startswith("appearances of enrolled people:"))
    numbers = [int(w.strip(",;:")) for w in summary.split() if w.strip(",;:").isdigit()]
    people, right, wrong, unknown, strangers, _, stranger_named = numbers
    assert people + strangers == 25 and right + wrong + unknown == people, summary
    assert wrong == 0 and stranger_named == 0, out
    assert right >= people - 2, out
