"""The wheel, as ``pip install .`` builds it: the code, the shipped configs and the command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_every_module_the_configs_and_the_command(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ in the checkout
    shutil.copytree(ROOT / "streamproc", src / "streamproc", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    subprocess.run([*build, "--wheel-dir", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("streamproc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read("streamproc-0.1.0.dist-info/entry_points.txt").decode()
    configs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "streamproc" / "configs").rglob("*.yaml")}
    assert (
        "streamproc/configs/default.yaml" in configs
        and "streamproc/configs/train/finetune-irv1.yaml" in configs
    )
    assert configs <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "streamproc").rglob("*.py")}
    assert modules <= names and "streamproc/py.typed" in names
    assert "streamproc = streamproc.cli:main" in entry_points


def test_the_configs_folder_of_a_checkout_is_the_shipped_one() -> None:
    assert (ROOT / "configs").resolve() == (ROOT / "streamproc" / "configs").resolve()
