"""``LocalRunner``: the whole pipeline in this process, every source interleaved round-robin.

The same code as a Ray stream actor, in one process: each source's ``StreamChain`` (decode ->
detect -> track -> crops | embed | aggregate) driven by a ``Pump``, and ``Outlet`` (match -> emit).
The detector and the embedder are built once and serve all streams. Each round takes one batch from
every open stream, detects each, embeds the crops of all of them in one model call, then
aggregates, matches and emits in stream order. A stream whose source fails is reported and closed
alone; the others go on. ``stop()`` (from another thread, or Ctrl-C) ends every stream cleanly:
open tracks are still decided.

Example:
    >>> summary = LocalRunner(load_config(None, ["sources=[{uri: a.mp4}]"])).run()  # doctest: +SKIP
    >>> summary.streams["a"].decisions  # doctest: +SKIP
    3
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from streamproc.annotate import Annotator
from streamproc.config import Config
from streamproc.detect import Detector, build_detector
from streamproc.gallery.base import GalleryStore
from streamproc.gallery.index import GalleryIndex
from streamproc.metrics import Recorder
from streamproc.models.embedder import Embedder
from streamproc.runtime.base import Runner
from streamproc.runtime.chain import RunSummary, StreamChain
from streamproc.runtime.control import Serving
from streamproc.runtime.outlet import Outlet
from streamproc.runtime.pump import LocalPool, Pump
from streamproc.stages.emit import Sink

log = logging.getLogger(__name__)
WATCH_S = 0.1  # how often the stop watcher looks at stop() and the deadline


class LocalRunner(Runner):
    """Runs ``config.sources`` in-process; ``run()`` returns a ``RunSummary``.

    ``sinks`` are added to the ones ``config.emit`` asks for. ``store`` / ``index`` replace the
    gallery of ``config.gallery``; ``detector`` / ``embedder`` replace the configured models.

    Example:
        >>> runner = LocalRunner(config, sinks=[JsonLinesSink("-")])  # doctest: +SKIP
        >>> runner.run(duration_s=60).ok  # doctest: +SKIP
        True
    """

    name = "local"

    def __init__(
        self,
        config: Config,
        *,
        recorder: Recorder | None = None,
        sinks: Sequence[Sink] = (),
        store: GalleryStore | None = None,
        index: GalleryIndex | None = None,
        annotator: Annotator | None = None,
        detector: Detector | None = None,
        embedder: Embedder | None = None,
    ):
        super().__init__(
            config, recorder=recorder, sinks=sinks, store=store, index=index, annotator=annotator
        )
        self.detector = detector or build_detector(config.detector)
        self.embedder = embedder or Embedder(config.embedder)

    def run(self, duration_s: float | None = None) -> RunSummary:
        """Process every source to its end (or until ``duration_s`` / ``stop()``)."""
        cfg = self.config
        card = self.embedder.card
        outlet = self._outlet(card)
        chains = [StreamChain(s, cfg, card.version, card.embedding_dim) for s in cfg.sources]
        embed = LocalPool(self.embedder, card.version)
        detect = LocalPool(lambda images: self.detector(list(images)), merge=None)
        self.pumps = pumps = [Pump(chain, embed, detect) for chain in chains]
        self.control = self._controller(outlet, self._swap_model)
        started = time.monotonic()
        outlet.start_clock()
        deadline = None if duration_s is None else started + duration_s
        done = threading.Event()
        watcher = threading.Thread(
            target=self._interrupt_at_stop,
            args=(chains, deadline, done),
            name="local-stop",
            daemon=True,
        )
        watcher.start()
        try:
            while pumps:
                try:
                    stop = self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline)
                    pumps = self._round(pumps, outlet, stop)
                except KeyboardInterrupt:
                    if self._stop.is_set():
                        raise
                    log.warning("stopping: closing open tracks (press Ctrl-C again to abort)")
                    self._stop.set()
            return outlet.summary(self.name, time.monotonic() - started)
        finally:
            done.set()
            self.control.close()
            for pump in pumps:
                pump.chain.close()
            outlet.close()

    def _interrupt_at_stop(
        self, chains: list[StreamChain], deadline: float | None, done: threading.Event
    ) -> None:
        """At ``stop()`` or the deadline, close every source from this thread: a source blocked opening
        a stream or waiting between reconnects (a refused camera retries forever) wakes up and ends,
        so the run loop gets to decide the open tracks and return."""
        while not done.wait(WATCH_S):
            if self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                self._stop.set()
                for chain in chains:
                    chain.source.close()
                return

    def _round(self, pumps: list[Pump], outlet: Outlet, stop: bool) -> list[Pump]:
        """One batch of every open stream, their crops embedded in one model call; returns the
        streams still open."""
        self.control.apply()
        for pump in pumps:
            for front in pump.feed(stop):
                outlet.on_front(front)
        for pump in pumps:
            for back in pump.drain():
                outlet.on_back(back)
            if pump.done:
                pump.chain.close()
        return [p for p in pumps if not p.done]

    def _swap_model(self, serving: Serving) -> None:
        """A rolling upgrade: in-process, the next batch uses the new model."""
        self.embedder = Embedder(self.config.embedder.model_copy(update={"model": serving.model}))
        embed = LocalPool(self.embedder, self.embedder.version)
        for pump in self.pumps:
            pump.embed = embed
        self.control.model_in_service(self.embedder.version)
