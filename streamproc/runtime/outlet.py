"""The driver side shared by both runners: match, emit, count, summarise.

``Outlet`` receives the ``Front`` / ``Back`` records of every stream (from ``StreamChain`` in this
process or from stream actors), records their metrics, runs the decisions through ``MatchStage``
and ``EmitStage`` in one place and keeps the per-stream summary. The sinks drop repeated event ids
(a restarted stream replays its file): the summary, the metrics and the stored unknown faces count
only the decisions some sink wrote now.

The gallery is ``config.gallery`` (``url`` None = ``STREAMPROC_REDIS_URL``, else the embedded
server) loaded into a ``GalleryIndex`` for the embedder's model version, unless a store or an index
is handed in. The threshold comes from ``streamproc.gallery.policy`` (the one threshold policy).
An ``annotator`` (``streamproc.annotate``) gets every batch's tracked faces and decisions.

Example:
    >>> outlet = Outlet(config, card, sources=config.sources)  # doctest: +SKIP
    >>> outlet.on_front(front); kept = outlet.on_back(back)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence

from streamproc import env
from streamproc.annotate import Annotator
from streamproc.config import Config
from streamproc.gallery import policy
from streamproc.gallery.base import GalleryStore
from streamproc.gallery.embedded import connect
from streamproc.gallery.index import GalleryIndex, index_options
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.metrics import NullRecorder, Recorder
from streamproc.models import compat
from streamproc.models.checkpoint import ModelCard
from streamproc.retry import server_retry
from streamproc.runtime.chain import Back, Front, RunSummary, StreamSummary
from streamproc.sources.config import SourceConfig
from streamproc.stages.emit import EmitStage, Sink
from streamproc.stages.match import MatchStage
from streamproc.types import Decision

log = logging.getLogger(__name__)
ALL_STREAMS = "*"  # stream label of work shared by streams (the embedding pool)
DECISIONS_KEPT = 100_000  # the latest decisions the run summary lists (85 MB when full, measured)
STREAM_COUNTERS = (  # counters with only a stream label, exposed at 0 from the start of a run
    "frames_in_total",
    "frames_decoded_total",
    "frames_dropped_total",
    "decode_errors_total",
    "reconnects_total",
    "source_failures_total",
    "faces_detected_total",
    "tracks_closed_total",
)


class Outlet:
    """Match + emit + metrics + summary for a run; see the module docstring."""

    def __init__(
        self,
        config: Config,
        card: ModelCard,
        *,
        sources: Sequence[SourceConfig],
        recorder: Recorder | None = None,
        sinks: Sequence[Sink] = (),
        store: GalleryStore | None = None,
        index: GalleryIndex | None = None,
        annotator: Annotator | None = None,
    ):
        self.config = config
        self.annotator = annotator
        self.card = card
        self.recorder = recorder or NullRecorder()
        self._owned_store = False
        if index is None:
            if store is None:
                store = RedisGalleryStore.from_config(config.gallery)
                self._owned_store = True
            index = GalleryIndex.load(store, card.version, **index_options(config.gallery))
        self.store = store
        resolved = policy.for_gallery(config.gallery, card, card.version, len(index), store)
        self.threshold = resolved.value
        self.match = MatchStage(
            self.threshold,
            index,
            store=store,
            recorder=self.recorder,
            sync_interval_s=config.runtime.gallery_sync_s,
            pair_threshold=compat.threshold,
            stores_unknowns=False,  # only the first time a decision goes out (below)
            margin=resolved.margin,
        )
        redis_client = None
        if config.emit.redis_stream is not None:
            redis_client = connect(config.gallery.url or env.redis_url(), config.gallery.embedded_dir)
        base = EmitStage.from_config(
            config.emit, redis_client=redis_client, retry=server_retry(config.gallery.retry_s)
        )
        self.emit = EmitStage([*base.sinks, *sinks])
        self._written = [0] * len(self.emit.sinks)
        self.streams = {s.stream_id: StreamSummary(s.stream_id, s.display_uri) for s in sources}
        self._started = {s.stream_id: time.monotonic() for s in sources}
        self.decisions: deque[Decision] = deque(maxlen=DECISIONS_KEPT)  # the summary's; bounded
        self._queued = dict.fromkeys(self.streams, 0)  # batches waiting inside each stream's chain
        self.recorder.gauge("gallery_size", len(index), model_version=card.version)
        self.recorder.gauge("model_info", 1, model_version=card.version, role="embedder")
        self._zero_series()
        log.info("gallery %s: %d identities, threshold %s", card.version, len(index), resolved.describe())

    def _zero_series(self) -> None:
        """Every per-stream and per-sink series at 0 from the start, so rates and alerts see them."""
        rec = self.recorder
        for sid in self.streams:
            for name in STREAM_COUNTERS:
                rec.count(name, 0, stream=sid)
            rec.count("faces_embedded_total", 0, stream=sid, model_version=self.card.version)
            rec.gauge("tracks_open", 0, stream=sid)
        for sink in self.emit.sinks:
            rec.count("events_written_total", 0, sink=sink.name)
        rec.gauge("queue_depth", 0, stage="chain")
        rec.gauge("in_flight", 0, stage="embed")  # a runner with work in flight sets it (the Ray driver)

    def start_clock(self) -> None:
        """Count each stream's wall time from now (after the models were loaded)."""
        now = time.monotonic()
        self._started = dict.fromkeys(self._started, now)

    # --- records from the streams ---------------------------------------------------------------
    def on_front(self, front: Front) -> None:
        sid, rec = front.stream_id, self.recorder
        summary = self.streams[sid]
        summary.frames += front.frames
        summary.faces += front.faces
        c = front.counters
        summary.reconnects += c.get("reconnects", 0)
        summary.dropped += c.get("frames_dropped", 0)
        for name, key in (
            ("frames_in_total", "frames_decoded"),
            ("frames_dropped_total", "frames_dropped"),
            ("decode_errors_total", "decode_errors"),
            ("reconnects_total", "reconnects"),
        ):
            if c.get(key, 0):
                rec.count(name, c[key], stream=sid)
        if front.frames:
            rec.count("frames_decoded_total", front.frames, stream=sid)
            rec.observe("batch_size", front.frames, stage="detect")
        if front.faces:
            rec.count("faces_detected_total", front.faces, stream=sid)
        for stage, seconds in front.seconds.items():
            rec.observe("stage_seconds", seconds, stage=stage, stream=sid)
        rec.gauge("tracks_open", front.open_tracks, stream=sid)
        if front.error is not None:
            summary.error = front.error
            rec.count("source_failures_total", 1, stream=sid)

    def on_back(self, back: Back) -> list[Decision]:
        """Match and emit the batch's aggregates; returns the decisions that went out."""
        sid, rec = back.stream_id, self.recorder
        summary = self.streams[sid]
        summary.tracks += len(back.closed_tracks)
        if back.closed_tracks:
            rec.count("tracks_closed_total", len(back.closed_tracks), stream=sid)
        if back.embedded:
            rec.count(
                "faces_embedded_total",
                back.embedded,
                stream=sid,
                model_version=back.model_version or self.card.version,
            )
        for stage, seconds in back.seconds.items():  # embedding is shared by all streams (one pool)
            rec.observe(
                "stage_seconds", seconds, stage=stage, stream=ALL_STREAMS if stage == "embed" else sid
            )
        if back.embedded:
            rec.observe("batch_size", back.embedded, stage="embed")
        self._queued[sid] = back.queued
        rec.gauge("queue_depth", sum(self._queued.values()), stage="chain")
        batch = self.match(back.as_batch())
        started = time.perf_counter()
        kept = self.emit.write(batch.decisions)  # a replayed decision the sinks had: not again
        self.match.store_unknowns(kept)
        rec.observe("stage_seconds", time.perf_counter() - started, stage="emit", stream=sid)
        for i, sink in enumerate(self.emit.sinks):
            new = self.emit.written[i] - self._written[i]
            if new:
                rec.count("events_written_total", new, sink=sink.name)
            self._written[i] = self.emit.written[i]
        for d in kept:
            rec.count(
                "decisions_total",
                stream=sid,
                known=str(d.identity is not None).lower(),
                kind=d.kind,
                model_version=d.model_version,
            )
        summary.decisions += len(kept)
        self.decisions.extend(kept)
        if self.annotator is not None:
            self.annotator.add(sid, back.tracked, kept)
        if back.end_of_stream:
            summary.wall_s = time.monotonic() - self._started[sid]
        return kept

    def drop_in_flight(self, stream_id: str) -> None:
        """The stream's batches in flight will never come back (its actor restarted or died)."""
        self._queued[stream_id] = 0
        self.recorder.gauge("queue_depth", sum(self._queued.values()), stage="chain")

    def fail(self, stream_id: str, error: str) -> None:
        """A stream died outside its chain (its actor is gone): record it."""
        summary = self.streams[stream_id]
        if summary.error is None:
            summary.error = error
            self.recorder.count("source_failures_total", 1, stream=stream_id)
        self.drop_in_flight(stream_id)
        summary.wall_s = time.monotonic() - self._started[stream_id]

    def summary(self, runner: str, wall_s: float) -> RunSummary:
        for sid, s in self.streams.items():
            if s.wall_s == 0.0:
                s.wall_s = time.monotonic() - self._started[sid]
        return RunSummary(runner, dict(self.streams), list(self.decisions), wall_s)

    def close(self) -> None:
        self.emit.close()
        self.match.close()
        if self._owned_store and self.store is not None:
            self.store.close()
