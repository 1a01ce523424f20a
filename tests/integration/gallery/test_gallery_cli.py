"""enroll and gallery commands end to end: real images, real models, the embedded server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.gallery.embedded import stop_embedded

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("gallery-data")
    mp.setenv("STREAMPROC_DATA_DIR", str(folder))
    yield folder
    stop_embedded()
    mp.undo()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_enroll_search_delete(
    capsys: pytest.CaptureFixture[str], data_dir: Path, celebrity_dir: Path
) -> None:
    # Photos of two comparable faces are rejected by name, the rest enrol, exit code 1 says some failed.
    code, out, err = run(capsys, "enroll", "--folder", str(celebrity_dir / "train"))
    assert code == 1
    assert "none is clearly the subject" in err and "enrolled" in out
    code, out, _ = run(capsys, "gallery", "list")
    assert code == 0 and "5 identities" in out

    probe = sorted((celebrity_dir / "val" / "jerry_seinfeld").iterdir())[0]
    code, out, _ = run(capsys, "gallery", "search", str(probe), "-k", "2")
    assert code == 0 and out.splitlines()[0].split(": ")[1].startswith("jerry_seinfeld")

    code, _, err = run(capsys, "gallery", "delete", "jerry_seinfeld")
    assert code == 2 and "--yes" in err
    code, out, _ = run(capsys, "gallery", "delete", "jerry_seinfeld", "--yes")
    assert code == 0 and "erased jerry_seinfeld" in out
    code, out, _ = run(capsys, "gallery", "search", str(probe), "-k", "1")
    assert code == 0 and "jerry_seinfeld" not in out
    code, _, err = run(capsys, "gallery", "show", "jerry_seinfeld")
    assert code == 2 and "no identity" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["enroll"], "nothing to enrol"),
        (["enroll", "--folder", "/nonexistent"], "not a folder"),
        (["gallery", "promote", "nope", "--name", "x"], "no cluster"),
    ],
)
def test_bad_requests(
    capsys: pytest.CaptureFixture[str], data_dir: Path, argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_enroll_rejects_an_image_without_a_face(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path
) -> None:
    import cv2
    import numpy as np

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((120, 120, 3), 128, np.uint8))
    code, _, err = run(capsys, "enroll", "--name", "nobody", str(blank))
    assert code == 1 and f"rejected {blank}: no face found" in err


def lfw_photo(lfw_dir: Path, person: str) -> Path:
    return sorted((lfw_dir / "lfw-deepfunneled" / person).glob("*.jpg"))[0]


@pytest.mark.parametrize("threshold", ["nan", "-1", "inf", "0", "5"])
def test_search_refuses_a_threshold_that_is_not_a_distance(
    capsys: pytest.CaptureFixture[str], data_dir: Path, lfw_dir: Path, threshold: str
) -> None:
    probe = lfw_photo(lfw_dir, "Aaron_Peirsol")
    code, out, err = run(capsys, "gallery", "search", str(probe), "--threshold", threshold)
    assert code == 2 and err.startswith("error: --threshold") and err.count("\n") == 1, (out, err)


def test_image_paths_that_are_not_files_are_named_for_what_they_are(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path
) -> None:
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    folder = tmp_path / "photos.jpg"
    folder.mkdir()
    for path, message in [(folder, "is a directory, not an image file"), (loop, "symbolic link loop")]:
        code, _, err = run(capsys, "gallery", "search", str(path))
        assert code == 2 and message in err, err


def test_a_rejection_names_the_path_once(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not an image\n")
    code, _, err = run(capsys, "enroll", "--name", "nobody", str(notes))
    line = next(line for line in err.splitlines() if line.startswith("rejected "))
    assert code == 1 and line.count(str(notes)) == 1, line


def test_enroll_folder_rejects_only_the_folder_with_a_bad_name(
    capsys: pytest.CaptureFixture[str], data_dir: Path, lfw_dir: Path, tmp_path: Path
) -> None:
    import shutil

    people = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody"]
    for i, person in enumerate(people):
        name = "Aa\x07Bad" if i == 0 else person  # sorted first: it used to abort the whole run
        (tmp_path / name).mkdir()
        shutil.copy(lfw_photo(lfw_dir, person), tmp_path / name / "1.jpg")
    code, out, err = run(capsys, "enroll", "--folder", str(tmp_path))
    assert code == 1, (out, err)
    assert "contains control characters" in err and "rejected folder" in err, err
    assert "enrolled 2 of 3 images; 1 rejected" in out, out
    code, out, _ = run(capsys, "gallery", "list")
    assert "Abdullah_Gul" in out and "Adrien_Brody" in out
