"""Fixtures of the reliability tests: those of the pipeline tests (gallery, demo videos, configs,
the real RTSP server), loaded from ``tests/integration/pipeline/conftest.py`` so both stay one code.

* ``gallery``, ``make_config``, ``demo_video``, ``make_demo_video``, ``demo_people``,
  ``face_pipeline``: see the pipeline conftest (an embedded gallery with five people enrolled, a
  480x360 12 fps video of faces cut from photos never enrolled, a small and fast config).
* ``rtsp_server``: the GStreamer RTSP server factory of ``tests/integration/rtsp``.
* ``ray_nodes``: a head (``ray start --head``: dashboard, Ray Client server) and a worker node
  (``ray start --address``) on loopback, for the module (``ray_nodes.py``).
* ``redis_server``: Debian's ``redis-server`` on a free loopback port with AOF (``appendfsync
  always``) in the test's tmp dir, which the test may stop, SIGKILL and start again on that port.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _load(relative: str, name: str) -> Any:
    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_pipeline = _load("pipeline/conftest.py", "_reliability_pipeline_fixtures")
_gallery = _load("gallery/conftest.py", "_reliability_gallery_fixtures")
_ray_nodes = _load("reliability/ray_nodes.py", "_reliability_ray_nodes")

rtsp_server = _pipeline.rtsp_server
face_pipeline = _pipeline.face_pipeline
gallery = _pipeline.gallery
make_demo_video = _pipeline.make_demo_video
demo_video = _pipeline.demo_video
demo_people = _pipeline.demo_people
make_config = _pipeline.make_config
run_settings = _pipeline.run_settings
DebianRedis = _gallery.DebianRedis
ray_nodes = _ray_nodes.ray_nodes


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A private ``redis-server`` (AOF, fsync always) on a free loopback port; stopped afterwards."""
    server = DebianRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
