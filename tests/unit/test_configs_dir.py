"""Every shipped config file loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import Config, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_file_loads(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_default_yaml_matches_code_defaults() -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    assert load_config(path) == load_config(None)
