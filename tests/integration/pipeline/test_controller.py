"""The run's controller on its own timer: it reads the serving record ``promote`` writes, loads the
new gallery off the data path, and switches only when the runner calls ``apply()`` between batches.
Real embedded valkey (the session's server), real model cards."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from streamproc.gallery.embedded import connect
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.models import registry
from streamproc.runtime.control import Controller, ModelControl, Serving
from streamproc.runtime.outlet import Outlet

pytestmark = pytest.mark.integration
MakeConfig = Any


def test_a_promoted_model_and_gallery_reach_the_run_between_batches(
    gallery: Any, make_config: MakeConfig
) -> None:
    prefix = f"control-{uuid.uuid4().hex[:8]}"
    card = registry.card(make_config([]).embedder.model)
    other = registry.peek_card(registry.MOBILEFACENET)
    store = RedisGalleryStore(connect(gallery.url), prefix=prefix)
    config = make_config(
        [{"uri": "unused.mp4"}],
        f"gallery.prefix={prefix}",
        "runtime.gallery_sync_s=0.1",
        "gallery.threshold=1.0",
    )
    outlet = Outlet(config, card, sources=config.sources, store=store)
    models: list[Serving] = []
    controller = Controller(config, outlet, models.append).start()
    try:
        ModelControl(store).set(Serving(registry.MOBILEFACENET, other.version, gallery=other.version))
        deadline = time.monotonic() + 10
        while not controller.pending and time.monotonic() < deadline:  # the timer's check
            time.sleep(0.05)
        assert outlet.match.index.model_version == card.version, "switched before apply()"
        assert not models
        controller.apply()
        assert outlet.match.index.model_version == other.version
        assert [m.model for m in models] == [registry.MOBILEFACENET]
        controller.model_in_service(other.version)
        assert outlet.card.version == other.version
        time.sleep(0.3)  # more periods: the same epoch is not applied again
        controller.apply()
        assert len(models) == 1
    finally:
        controller.close()
        outlet.close()
        store.close()
