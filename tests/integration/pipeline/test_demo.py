"""The README's main job, end to end: enrol, synthesise a video, run on Ray, score every shot."""

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


def test_demo_recognises_the_shots(
    capsys: pytest.CaptureFixture[str], ray_cluster: None, own_data_dir: Path, celebrity_dir: Path
) -> None:
    code = main(["demo", "--set", "embedder.threads=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert (own_data_dir / "demo" / "demo.mp4").stat().st_size > 0
    summary = next(line for line in out.splitlines() if line.startswith("identification:"))
    recognised, shots = summary.split("; ")[1].split()[0].split("/")
    assert int(shots) == 25 and int(recognised) >= 22, summary
