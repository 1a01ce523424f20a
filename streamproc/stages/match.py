"""The match stage: look each new track aggregate up in the gallery and decide who it is.

For every decision in ``batch.decisions`` that no gallery has seen yet (``gallery_version == ''``):

* its embedding is searched in the in-memory ``GalleryIndex`` (one k=2 call for the whole batch);
  ``identity`` is the nearest person's name when the squared L2 distance is at most ``threshold``
  and the next person is at least ``margin`` farther (``streamproc.gallery.base.named``), else None
  (unknown); ``distance`` is that nearest distance (NaN for an empty gallery) and
  ``gallery_version`` the gallery's model version;
* an unknown **revision 0** is stored with ``store.add_unknown`` (when a store is given) so the
  unknown faces can be clustered and named later (with ``stores_unknowns=False`` the caller does
  it, through ``store_unknowns``, once the decision went out);
* a **later revision** is kept only when its identity differs from the identity last emitted for
  the track: it is then an explicit update event; otherwise it is dropped (nothing new to say).

Decisions of another model version than the gallery's are matched only through ``pair_threshold``
(probe version, gallery version) -> threshold, which raises ``IncompatibleModels`` for a pair that
was never calibrated (``streamproc.models.compat.threshold``); without it they raise
``IncompatibleModels``: embeddings of two models are never compared blindly. While a model upgrade
is rolled out, a track may go on under the new version: its first decision there is dropped when it
names the identity the track already said (nothing new), and is an update event otherwise.
``switch_index`` swaps the gallery (e.g. to a re-embedded version) between two batches. With a store, ``index.sync()`` runs at most every
``sync_interval_s`` so enrollments and erasures reach the matcher while it runs; a failed sync is
logged and retried later (the index keeps serving what it has). Tracks listed in
``batch.closed_tracks`` (or all of a stream at ``end_of_stream``) are forgotten after the batch.

Example:
    >>> import numpy as np
    >>> from streamproc.gallery.index import GalleryIndex
    >>> from streamproc.types import Decision, FrameBatch
    >>> index = GalleryIndex.from_arrays(["id-ada"], ["Ada"], np.eye(1, 4, dtype=np.float32), model_version="v1")
    >>> stage = MatchStage(1.0, index)
    >>> d = Decision("cam", 0, 0.0, 1.0, None, float("nan"), 5, "v1", "", embedding=np.eye(1, 4, dtype=np.float32)[0])
    >>> out = stage(FrameBatch("cam", np.zeros((0, 1, 1, 3), np.uint8), [], decisions=[d]))
    >>> [(x.identity, x.distance, x.gallery_version) for x in out.decisions]
    [('Ada', 0.0, 'v1')]
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from streamproc.errors import ConfigError, GalleryError, IncompatibleModels
from streamproc.gallery.base import GalleryStore, Match, named
from streamproc.gallery.index import GalleryIndex
from streamproc.metrics import NullRecorder, Recorder
from streamproc.stages.base import Stage
from streamproc.types import Decision, FrameBatch

log = logging.getLogger(__name__)


class MatchStage(Stage):
    """Fills ``identity``, ``distance`` and ``gallery_version`` of new decisions; drops repeats.

    ``threshold`` is a squared L2 distance, resolved by ``streamproc.gallery.policy``, and ``margin``
    the lead over the next person a name needs (``gallery.margin``); every decision carries the
    threshold it was matched at.
    ``gallery_version`` defaults to ``index.model_version``.

    Example:
        >>> stage = MatchStage(1.172, GalleryIndex.load(store, "v1"), store=store)  # doctest: +SKIP
        >>> stage(batch).decisions  # doctest: +SKIP
        [Decision(stream_id='cam', track_id=0, ..., identity='Ada', distance=0.41, ...)]
    """

    name = "match"

    def __init__(
        self,
        threshold: float,
        index: GalleryIndex,
        *,
        store: GalleryStore | None = None,
        gallery_version: str | None = None,
        recorder: Recorder | None = None,
        sync_interval_s: float | None = 1.0,
        clock: Callable[[], float] = time.monotonic,
        pair_threshold: Callable[[str, str], float] | None = None,
        stores_unknowns: bool = True,
        margin: float = 0.0,
    ):
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ConfigError(f"match threshold: expected a positive squared L2 distance, got {threshold}")
        if not (margin >= 0 and math.isfinite(margin)):
            raise ConfigError(f"match margin: expected a squared L2 distance >= 0, got {margin}")
        self.threshold = float(threshold)
        self.margin = float(margin)
        self.index = index
        self.store = store
        self.gallery_version = gallery_version or index.model_version
        if not self.gallery_version:
            raise ConfigError(
                "MatchStage: the gallery index has no model version; load it for the embedder's "
                "version (GalleryIndex.load(store, version)) or pass gallery_version"
            )
        self.recorder = recorder or NullRecorder()
        self.sync_interval_s = sync_interval_s if store is not None else None
        self._clock = clock
        self._last_sync = clock()
        self.pair_threshold = pair_threshold
        self.stores_unknowns = stores_unknowns  # False: the caller calls store_unknowns itself
        self._older: dict[str, tuple[GalleryIndex, float]] = {}  # galleries switched away from, by version
        self._said: dict[tuple[str, int], tuple[str, str | None]] = {}  # (stream, track) -> (model, identity)

    def switch_index(self, index: GalleryIndex, threshold: float) -> None:
        """Match against ``index`` (same-version ``threshold``) from the next batch on."""
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ConfigError(f"match threshold: expected a positive squared L2 distance, got {threshold}")
        self._older[self.index.model_version] = (self.index, self.threshold)  # for late embeddings
        self._older.pop(index.model_version, None)
        self.index, self.threshold = index, float(threshold)
        self.gallery_version = index.model_version

    def _index_for(self, model_version: str) -> tuple[GalleryIndex, float]:
        """The gallery a probe of ``model_version`` is matched against, and at what threshold: its
        own version's (also one switched away from, for embeddings made just before a switch), else
        the current one through the calibrated pair."""
        if model_version != self.index.model_version and model_version in self._older:
            return self._older[model_version]
        return self.index, self.threshold_for(model_version)

    def threshold_for(self, model_version: str) -> float:
        """The threshold for probes of ``model_version`` against the current gallery."""
        if model_version == self.index.model_version:
            return self.threshold
        if self.pair_threshold is None:
            raise IncompatibleModels(
                f"probes come from model version {model_version!r}, the gallery index holds "
                f"{self.index.model_version!r}: embeddings of different model versions are never "
                "compared; load the gallery for the embedder's version (re-embed it if needed)"
            )
        return self.pair_threshold(model_version, self.index.model_version)

    # --- the stage --------------------------------------------------------------------------------
    def process(self, batch: FrameBatch) -> FrameBatch:
        started = time.perf_counter()
        fresh = [d for d in batch.decisions if d.gallery_version == ""]
        if fresh:
            self._maybe_sync()
        matches = self._nearest(fresh)
        out: list[Decision] = []
        looked_up = iter(zip(fresh, matches, strict=True))
        for decision in batch.decisions:
            if decision.gallery_version != "":
                out.append(decision)  # matched upstream: pass through
                continue
            _, nearest = next(looked_up)
            kept = self._decide(decision, nearest)
            if kept is not None:
                out.append(kept)
        self._forget(batch)
        if fresh:
            self.recorder.observe(
                "stage_seconds", time.perf_counter() - started, stage=self.name, stream=batch.stream_id
            )
            self.recorder.observe("batch_size", len(fresh), stage=self.name)
        return dataclasses.replace(batch, decisions=out)

    def _nearest(self, decisions: Sequence[Decision]) -> list[list[Match]]:
        """The two nearest gallery people of each decision's embedding (none for an empty gallery)."""
        if not decisions:
            return []
        for d in decisions:
            self._index_for(d.model_version)  # raises for a pair that may not be compared
            if d.embedding is None:
                raise GalleryError(
                    f"decision of stream {d.stream_id!r} track {d.track_id} carries no embedding to match"
                )
        out: list[list[Match]] = [[] for _ in decisions]
        for version in {d.model_version for d in decisions}:
            rows = [i for i, d in enumerate(decisions) if d.model_version == version]
            probes = np.stack([np.asarray(decisions[i].embedding, np.float32) for i in rows])
            started = time.perf_counter()
            results = self._index_for(version)[0].search(probes, k=2)
            self.recorder.observe("gallery_search_seconds", time.perf_counter() - started)
            for i, r in zip(rows, results, strict=True):
                out[i] = r
        return out

    def _decide(self, decision: Decision, nearest: list[Match]) -> Decision | None:
        """The matched decision, or None when it repeats what the track already said."""
        match = nearest[0] if nearest else None
        distance = float("nan") if match is None else match.distance
        index, threshold = self._index_for(decision.model_version)
        chosen = named(nearest, threshold, self.margin)
        identity = None if chosen is None else chosen.name
        if match is not None and chosen is None and match.within(threshold):
            log.info(
                "%s track %d: unknown, %s at %.3f and %s at %.3f are within margin %g of each other",
                decision.stream_id,
                decision.track_id,
                nearest[0].name,
                nearest[0].distance,
                nearest[1].name,
                nearest[1].distance,
                self.margin,
            )
        matched = dataclasses.replace(
            decision,
            identity=identity,
            distance=distance,
            gallery_version=index.model_version,
            threshold=threshold,
        )
        key = (decision.stream_id, decision.track_id)
        said = self._said.get(key)
        if (
            said is not None
            and said[1] == identity
            and (decision.revision > 0 or said[0] != decision.model_version)
        ):
            return None  # the same identity again: nothing new to say
        self._said[key] = (decision.model_version, identity)
        if match is not None:
            self.recorder.observe("match_distance", distance)
        if self.stores_unknowns:
            self.store_unknowns([matched])
        return matched

    def store_unknowns(self, decisions: Sequence[Decision]) -> None:
        """Store the unknown revision-0 decisions for clustering (when a store was given)."""
        for d in decisions:
            if self.store is not None and d.embedding is not None and d.identity is None and d.revision == 0:
                self._store_unknown(self.store, d, d.embedding)

    @staticmethod
    def _store_unknown(store: GalleryStore, decision: Decision, embedding: np.ndarray) -> None:
        meta = {
            "stream_id": decision.stream_id,
            "track_id": decision.track_id,
            "first_pts": decision.first_pts,
            "last_pts": decision.last_pts,
            "n_frames": decision.n_frames,
            "event_id": decision.event_id,
            "time": time.time(),
        }
        try:
            store.add_unknown(embedding, decision.model_version, meta)
        except GalleryError as exc:  # best effort: the decision itself still goes out
            log.warning(
                "unknown face of %s track %d not stored: %s", decision.stream_id, decision.track_id, exc
            )

    def _maybe_sync(self) -> None:
        if self.sync_interval_s is None:
            return
        now = self._clock()
        if now - self._last_sync < self.sync_interval_s:
            return
        self._last_sync = now
        try:
            refreshed = self.index.sync()
        except GalleryError as exc:
            log.warning("gallery sync failed, matching against the index as it was: %s", exc)
            return
        if refreshed:
            log.info("gallery index %s: %d identities refreshed", self.index.model_version, refreshed)
        self.recorder.gauge("gallery_size", len(self.index), model_version=self.index.model_version)

    def _forget(self, batch: FrameBatch) -> None:
        if batch.end_of_stream:
            self.reset(batch.stream_id)
            return
        closed = set(batch.closed_tracks)
        if closed:
            for key in [k for k in self._said if k[0] == batch.stream_id and k[1] in closed]:
                del self._said[key]

    def reset(self, stream_id: str) -> None:
        for key in [k for k in self._said if k[0] == stream_id]:
            del self._said[key]

    def close(self) -> None:
        self._said.clear()
