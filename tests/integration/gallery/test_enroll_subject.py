"""Ordinary photos enrol (issue 12): a real LFW portrait with a small second real face pasted into a
corner (the person far behind, or MTCNN's false face in the hair) enrols its subject; a photo of two
comparable real faces side by side is rejected as ambiguous, unless ``--pick`` chooses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.cli import main
from streamproc.config import load_config
from streamproc.detect import build_detector
from streamproc.faces import read_image
from streamproc.gallery.embedded import stop_embedded

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("STREAMPROC_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path / "data"
    stop_embedded()


def lfw(lfw_dir: Path, person: str) -> np.ndarray:
    return read_image(sorted((lfw_dir / "lfw-deepfunneled" / person).glob("*.jpg"))[0])


def write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def faces_found(path: Path, mtcnn_weights_dir: Path) -> int:
    return len(build_detector(load_config(None).detector, mtcnn_weights_dir)([read_image(path)])[0])


@pytest.fixture
def photos(lfw_dir: Path, tmp_path: Path, mtcnn_weights_dir: Path) -> dict[str, Path]:
    subject, other = lfw(lfw_dir, "Aaron_Peirsol"), lfw(lfw_dir, "Abdullah_Gul")
    portrait = subject.copy()
    portrait[4:64, 186:246] = cv2.resize(other[60:190, 60:190], (60, 60), interpolation=cv2.INTER_AREA)
    side_by_side = np.concatenate([subject[40:210, 40:210], other[40:210, 40:210]], axis=1)
    made = {
        "portrait": write(tmp_path / "portrait.png", portrait),
        "pair": write(tmp_path / "pair.png", side_by_side),
    }
    for path in made.values():  # the detector really reports two faces in each
        assert faces_found(path, mtcnn_weights_dir) == 2, path
    return made


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_portrait_with_a_small_second_face_enrols_its_subject(
    capsys: pytest.CaptureFixture[str], data_dir: Path, photos: dict[str, Path], lfw_dir: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "enroll", "--name", "Aaron Peirsol", str(photos["portrait"]))
    assert code == 0 and "enrolled 1 of 1 images; 0 rejected" in out, err
    # the same rule for search: the subject is searched, and it is the enrolled person
    code, out, err = run(capsys, "gallery", "search", str(photos["portrait"]), "-k", "1")
    face_lines = [line for line in out.splitlines() if line.startswith("face ")]
    assert code == 0 and len(face_lines) == 1 and ": Aaron Peirsol (" in face_lines[0], out


def test_two_comparable_faces_are_rejected_as_ambiguous_unless_picked(
    capsys: pytest.CaptureFixture[str], data_dir: Path, photos: dict[str, Path]
) -> None:
    pair = photos["pair"]
    code, out, err = run(capsys, "enroll", "--name", "Someone", str(pair))
    assert code == 1 and f"rejected {pair}: 2 faces found and none is clearly the subject" in err, err
    code, _, err = run(capsys, "gallery", "search", str(pair))
    assert code == 2 and "none is clearly the subject" in err
    code, out, err = run(capsys, "enroll", "--name", "Someone", "--pick", "largest", str(pair))
    assert code == 0 and "enrolled 1 of 1 images" in out, err
