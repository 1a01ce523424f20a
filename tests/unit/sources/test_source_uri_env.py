"""A camera URL with a password comes from an environment variable (``uri_env``), so it can live in a
Kubernetes Secret instead of the run configuration (deploy/kuberay/run-deployment.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamproc.config import Config, load_config
from streamproc.errors import ConfigError

URL = "rtsp://admin:s3cret@cam1.example.internal:554/stream"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_uri_from_the_named_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMERA_1_URL", URL)
    config = load_config(write(tmp_path, "sources:\n  - uri_env: CAMERA_1_URL\n    sample_fps: 10\n"))
    (source,) = config.sources
    assert (source.uri, source.stream_id, source.sample_fps, source.is_live) == (
        URL,
        "cam1.example.internal-554-stream",
        10,
        True,
    )
    assert "s3cret" not in json.dumps(config.redacted())
    monkeypatch.delenv("CAMERA_1_URL")  # a process that gets the resolved config needs no variable
    assert Config.model_validate(config.model_dump()).sources == config.sources


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("uri_env: CAMERA_9_URL", "CAMERA_9_URL is not set"),
        ("{uri_env: CAMERA_1_URL, uri: rtsp://cam1/stream}", "uri or uri_env, not both"),
    ],
)
def test_uri_env_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str) -> None:
    monkeypatch.setenv("CAMERA_1_URL", URL)
    monkeypatch.delenv("CAMERA_9_URL", raising=False)
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"sources:\n  - {source}\n"))
