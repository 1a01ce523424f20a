"""A face about as near two enrolled people is named neither: real LFW look-alikes through the CLI.

Each hard probe below is nearer the wrong person than its own, by less than the margin (squared L2):
Jose_Serra_0005 is 0.425 from Peter_Arnett and 0.427 from Jose_Serra; with the nearest name alone it
is given Peter_Arnett's. The same people's ordinary photos lead by more than the margin and keep
their names. The margin stops near-ties only: a confident model error stays (with the LFW bench's
gallery, Tung_Chee-hwa_0002 is 0.22 nearer Norodom_Sihanouk than its own photo and keeps that name).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.gallery.embedded import stop_embedded

pytestmark = pytest.mark.integration

ENROLLED = [
    "Jose_Serra",
    "Peter_Arnett",
    "Elena_Bovina",
    "Meghann_Shaughnessy",
    "Tung_Chee-hwa",
    "Norodom_Sihanouk",
]
NEAR_TIES = ["Jose_Serra_0005", "Elena_Bovina_0003", "Tung_Chee-hwa_0005"]  # nearest is the wrong person
CLEAR = {"Jose_Serra_0002": "Jose_Serra", "Jose_Serra_0008": "Jose_Serra"}


@pytest.fixture(scope="module")
def photos(lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mp = pytest.MonkeyPatch()
    mp.setenv("STREAMPROC_DATA_DIR", str(tmp_path_factory.mktemp("lookalikes")))
    root = lfw_dir / "lfw-deepfunneled"
    for name in ENROLLED:
        photo = str(root / name / f"{name}_0001.jpg")
        assert main(["enroll", "--name", name, "--pick", "center", photo]) == 0  # LFW centres its subject
    yield root
    stop_embedded()
    mp.undo()


def verdict(photos: Path, capsys: pytest.CaptureFixture[str], photo: str) -> str:
    capsys.readouterr()
    person = photo.rsplit("_", 1)[0]
    path = str(photos / person / f"{photo}.jpg")
    assert main(["gallery", "search", path, "-k", "2", "--pick", "center"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    return first.split(": ", 1)[1]


@pytest.mark.parametrize("photo", NEAR_TIES)
def test_a_near_tie_between_two_enrolled_people_is_unknown(
    photos: Path, capsys: pytest.CaptureFixture[str], photo: str
) -> None:
    said = verdict(photos, capsys, photo)
    assert said.startswith("unknown") and "within the margin" in said, said


@pytest.mark.parametrize(("photo", "person"), sorted(CLEAR.items()))
def test_a_clear_lead_keeps_its_name(
    photos: Path, capsys: pytest.CaptureFixture[str], photo: str, person: str
) -> None:
    assert verdict(photos, capsys, photo).startswith(f"{person} (threshold")
