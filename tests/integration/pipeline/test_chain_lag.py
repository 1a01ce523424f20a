"""A stream chain whose tracker runs batches ahead of its guard, as a file source on Ray does.

The demo video has same-place cuts that boxes cannot see, so the appearance guard must split tracks,
batches after the tracker moved on (by then it may even have met the stream's end). Driven in-process
with the real detector, embedder and gallery: no cluster needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamproc.config import Config
from streamproc.faces import FacePipeline
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.policy import resolve
from streamproc.runtime.chain import Back, StreamChain
from streamproc.runtime.pump import LocalPool, Pump
from streamproc.sources import SourceConfig
from streamproc.types import Decision

from .conftest import Gallery, MakeConfig


def run_lagging(chain: StreamChain, pipeline: FacePipeline, lag: int) -> list[Decision]:
    """Track up to ``lag`` batches ahead of embedding and aggregation (a pump ``lag + 1`` deep); the
    aggregates made."""
    detect = LocalPool(lambda images: pipeline.detector(list(images)), merge=np.concatenate)
    pump = Pump(chain, LocalPool(pipeline.embedder), detect, depth=lag + 1)
    decisions: list[Decision] = []
    while not pump.done:
        decisions += [d for r in pump.step() if isinstance(r, Back) for d in r.decisions]
    chain.close()
    return decisions


def names(
    decisions: list[Decision], gallery: Gallery, config: Config, pipeline: FacePipeline
) -> dict[int, str | None]:
    """Each decided track's name from its last aggregate, at the run's own threshold."""
    version = pipeline.model_version
    index = GalleryIndex.load(gallery.store(), version)
    limit = resolve(config.gallery, pipeline.embedder.card, version, version, len(index)).value
    last = {d.track_id: d for d in sorted(decisions, key=lambda d: d.revision)}
    found = index.identify(np.stack([d.embedding for d in last.values()]), limit)
    return {tid: m.name if m else None for tid, m in zip(last, found, strict=True)}


@pytest.mark.parametrize("lag", [0, 2, 6])
def test_every_person_is_decided_when_the_tracker_runs_ahead(
    lag: int,
    make_config: MakeConfig,
    demo_video: Path,
    demo_people: set[str],
    gallery: Gallery,
    face_pipeline: FacePipeline,
) -> None:
    config = make_config([])
    chain = StreamChain(
        SourceConfig(uri=str(demo_video), stream_id="demo"),
        config,
        face_pipeline.model_version,
        face_pipeline.embedder.card.embedding_dim,
    )
    decisions = run_lagging(chain, face_pipeline, lag)
    named = names(decisions, gallery, config, face_pipeline)
    assert len(named) == 5, named  # five appearances: four enrolled people and the stranger
    assert sorted(n for n in named.values() if n) == sorted(demo_people), named
    assert len({(d.track_id, d.revision) for d in decisions}) == len(decisions)
