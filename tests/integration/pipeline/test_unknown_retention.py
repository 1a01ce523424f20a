"""Retention of unknown faces: a run erases those older than ``gallery.unknown_retention_s``, and
``streamproc gallery forget-unknowns`` does it on demand. Real embedded valkey, the session's server."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest

from streamproc.cli import main
from streamproc.gallery.embedded import connect
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.models import registry
from streamproc.runtime.control import Controller
from streamproc.runtime.outlet import Outlet

pytestmark = pytest.mark.integration
MakeConfig = Any


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def old_and_new_unknowns(store: RedisGalleryStore, version: str, dim: int, gap_s: float) -> float:
    """Two unknown faces ``gap_s`` apart; returns an age limit that falls between them."""
    old, new = unit_rows(2, dim, seed=5)
    store.add_unknown(old, version, {"stream_id": "cam1"})
    time.sleep(gap_s)
    store.add_unknown(new, version, {"stream_id": "cam1"})
    return gap_s / 2


def test_a_run_erases_unknown_faces_past_their_retention(gallery: Any, make_config: MakeConfig) -> None:
    prefix = f"retain-{uuid.uuid4().hex[:8]}"
    card = registry.card(make_config([]).embedder.model)
    store = RedisGalleryStore(connect(gallery.url), prefix=prefix)
    keep_s = old_and_new_unknowns(store, card.version, card.embedding_dim, gap_s=1.0)
    config = make_config(
        [{"uri": "unused.mp4"}], f"gallery.prefix={prefix}", f"gallery.unknown_retention_s={keep_s}"
    )
    outlet = Outlet(config, card, sources=config.sources, store=store)
    try:
        Controller(config, outlet).check()  # what the controller's timer runs
        assert len(store.unknowns(card.version).ids) == 1
    finally:
        outlet.close()
        store.close()


def test_forget_unknowns_command(gallery: Any, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"forget-{uuid.uuid4().hex[:8]}"
    store = RedisGalleryStore(connect(gallery.url), prefix=prefix)
    keep_s = old_and_new_unknowns(store, "v-test", 8, gap_s=1.0)
    where = ["--set", f"gallery.url={gallery.url}", "--set", f"gallery.prefix={prefix}"]
    assert main(["gallery", "forget-unknowns", *where]) == 2
    assert "--older-than-days" in capsys.readouterr().err
    days = keep_s / 86400
    assert main(["gallery", "forget-unknowns", "--older-than-days", repr(days), *where]) == 0
    assert capsys.readouterr().out.startswith("erased 1 unknown faces")
    assert len(store.unknowns("v-test").ids) == 1
    assert main(["gallery", "forget-unknowns", "--set", "gallery.unknown_retention_s=0.001", *where]) == 0
    assert store.unknowns("v-test").ids == []
    store.close()
