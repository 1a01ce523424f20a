"""What the local and the Ray runner share: their inputs, ``stop()``, the outlet they feed and its controller.

Example:
    >>> class Dry(Runner):
    ...     name = "dry"
    >>> Dry(load_config(None)).stop()  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from streamproc.annotate import Annotator
from streamproc.config import Config
from streamproc.gallery.base import GalleryStore
from streamproc.gallery.index import GalleryIndex
from streamproc.metrics import NullRecorder, Recorder
from streamproc.models.checkpoint import ModelCard
from streamproc.runtime.chain import check_sources
from streamproc.runtime.control import Controller, Serving
from streamproc.runtime.outlet import Outlet
from streamproc.stages.emit import Sink


class Runner:
    """Checks the sources, keeps the sinks, gallery handles and annotator, and owns the stop flag."""

    name = "runner"

    def __init__(
        self,
        config: Config,
        *,
        recorder: Recorder | None = None,
        sinks: Sequence[Sink] = (),
        store: GalleryStore | None = None,
        index: GalleryIndex | None = None,
        annotator: Annotator | None = None,
    ):
        check_sources(config.sources)
        self.annotator = annotator
        self.config = config
        self.recorder = recorder or NullRecorder()
        self._sinks = list(sinks)
        self._store, self._index = store, index
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the run to end: every stream closes its open tracks and stops (thread-safe)."""
        self._stop.set()

    def _outlet(self, card: ModelCard) -> Outlet:
        """Matching, emitting, metrics and the summary for one run."""
        return Outlet(
            self.config,
            card,
            sources=self.config.sources,
            recorder=self.recorder,
            sinks=self._sinks,
            store=self._store,
            index=self._index,
            annotator=self.annotator,
        )

    def _controller(self, outlet: Outlet, on_model: Callable[[Serving], None]) -> Controller:
        """The run's control plane (upgrades, gallery switches, retention), started on its timer."""
        return Controller(self.config, outlet, on_model).start()
