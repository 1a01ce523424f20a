"""Fixtures of the training integration tests: one small local Ray cluster for Ray Train V2.

``ray_train_cluster`` reuses a cluster another fixture (e.g. the pipeline tests' ``ray_cluster``)
already started in this session, and only shuts down one it started itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


@pytest.fixture(scope="session")
def ray_train_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20)
    yield
    if started:
        ray.shutdown()
