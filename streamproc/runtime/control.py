"""The control plane of a run: the model in service, gallery switches, retention of unknowns.

``ModelControl`` keeps ``{model, version, gallery, previous_model, previous_gallery, epoch}`` at the
gallery store's ``control:model`` key. ``streamproc models promote`` writes it. No key (a fresh
gallery) means "what the config says"; ``epoch`` grows with every write, so a run sees each change
once.

``Controller`` runs on its own timer (a thread, every ``runtime.gallery_sync_s``), for both
runners: it erases unknown faces older than ``gallery.unknown_retention_s`` (every
``RETENTION_CHECK_S``), reads the serving record and, when it changed, loads the ``gallery``
version's index there, off the data path. Between two batches the runner calls ``apply()``: the
outlet's matcher switches index (through the calibrated harmonic pair while the gallery is still
the old version), and a changed ``model`` goes to the runner's ``on_model`` (the local runner loads
it; the Ray driver starts new embedding actors and drains the old), which reports back with
``model_in_service`` once the new model serves.

Example:
    >>> control = ModelControl(store)  # doctest: +SKIP
    >>> control.set(Serving("mobilefacenet-h128", "v2", gallery="v1"))  # doctest: +SKIP
    >>> controller = Controller(config, outlet, on_model=print).start()  # doctest: +SKIP
    >>> controller.apply()  # between two batches  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamproc.config import Config
from streamproc.errors import GalleryError, StreamprocError
from streamproc.gallery import policy
from streamproc.gallery.index import GalleryIndex, index_options
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.models import registry

if TYPE_CHECKING:
    from streamproc.runtime.outlet import Outlet

log = logging.getLogger(__name__)
RETENTION_CHECK_S = 60.0  # how often a run erases unknown faces past gallery.unknown_retention_s


@dataclass(frozen=True)
class Serving:
    """What the pipelines should run: the embedding model, and the gallery version to match against."""

    model: str  # registry name
    version: str  # its model version
    gallery: str  # the gallery version matched against
    previous_model: str = ""  # what ``promote --rollback`` returns to
    previous_gallery: str = ""
    epoch: int = 0


class ModelControl:
    """Reads and writes the ``Serving`` record of one gallery (same Redis, same key prefix)."""

    def __init__(self, store: RedisGalleryStore):
        self.store = store
        self.key = store.key("control", "model")

    def get(self) -> Serving | None:
        try:
            raw = self.store.client.hgetall(self.key)
        except Exception as exc:  # redis errors: the caller keeps what it had
            raise GalleryError(f"cannot read the serving model from Redis: {exc}") from exc
        if not raw:
            return None
        fields = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        known = {f.name for f in dataclasses.fields(Serving)}
        values: dict[str, Any] = {k: v for k, v in fields.items() if k in known}
        values["epoch"] = int(values.get("epoch", 0))
        return Serving(**values)

    def set(self, serving: Serving) -> Serving:
        """Write ``serving`` with the next epoch (one atomic HSET + HINCRBY); returns what was written."""
        fields: dict[str, str] = {k: str(v) for k, v in dataclasses.asdict(serving).items() if k != "epoch"}
        pipe = self.store.client.pipeline(transaction=True)
        pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
        pipe.hincrby(self.key, "epoch", 1)
        _, epoch = pipe.execute()
        return dataclasses.replace(serving, epoch=int(epoch))


class Controller:
    """Upgrades, gallery switches, retention and model cards of one run; see the module docstring."""

    def __init__(self, config: Config, outlet: Outlet, on_model: Callable[[Serving], None] | None = None):
        self.config, self.outlet, self.on_model = config, outlet, on_model
        store = outlet.store
        self.records = ModelControl(store) if isinstance(store, RedisGalleryStore) else None
        self.serving = Serving(config.embedder.model, outlet.card.version, outlet.match.index.model_version)
        self._due: tuple[Serving, tuple[GalleryIndex, float] | None] | None = None  # for apply()
        self._last_expiry = -float("inf")
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Controller:
        if self.records is not None or self.config.gallery.unknown_retention_s is not None:
            self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        period = self.config.runtime.gallery_sync_s
        while not self._stop.wait(period):
            try:
                self.check()
            except StreamprocError as exc:
                log.warning("control check failed, retried in %gs: %s", period, exc)
            except Exception:
                log.exception("control check failed, retried in %gs", period)

    def check(self) -> None:
        """One period: erase expired unknown faces when due; read the serving record and prepare
        what ``apply`` switches to (a new gallery index is loaded here)."""
        self._expire_unknowns(time.monotonic())
        if self.records is None:
            return
        try:
            serving = self.records.get()
        except GalleryError as exc:
            log.warning("serving model unknown (%s); keeping %s", exc, self.serving.model)
            return
        with self._lock:
            seen = self._due[0] if self._due is not None else self.serving
        if serving is None or serving.epoch == seen.epoch:
            return
        switch = None
        if serving.gallery != self.outlet.match.index.model_version:
            switch = self._load(serving.gallery)
        with self._lock:
            self._due = (serving, switch)

    def _load(self, version: str) -> tuple[GalleryIndex, float]:
        g, store = self.config.gallery, self.outlet.store
        assert store is not None
        index = GalleryIndex.load(store, version, **index_options(g))
        card = registry.peek_card(registry.name_for(version))
        resolved = policy.for_gallery(g, card, version, len(index), store)
        log.info("gallery %s loaded: %d identities, threshold %s", version, len(index), resolved.describe())
        return index, resolved.value

    @property
    def pending(self) -> bool:
        """A change read by ``check`` waits for ``apply``."""
        return self._due is not None

    def apply(self) -> None:
        """Between two batches: switch to what ``check`` prepared; a new model goes to ``on_model``."""
        with self._lock:
            due, self._due = self._due, None
        if due is None:
            return
        serving, switch = due
        if switch is not None:
            self.outlet.match.switch_index(*switch)
            self.outlet.recorder.gauge("gallery_size", len(switch[0]), model_version=serving.gallery)
            log.info("gallery switched to %s", serving.gallery)
        changed = serving.model != self.serving.model
        self.serving = serving
        if changed and self.on_model is not None:
            self.on_model(serving)

    def _expire_unknowns(self, now: float) -> None:
        keep, store = self.config.gallery.unknown_retention_s, self.outlet.store
        if keep is None or store is None or now - self._last_expiry < RETENTION_CHECK_S:
            return
        self._last_expiry = now
        try:
            gone = store.forget_unknowns(keep)
        except GalleryError as exc:
            log.warning("unknown faces past their retention not erased yet: %s", exc)
            return
        if gone:
            log.info("erased %d unknown faces older than %gs (gallery.unknown_retention_s)", gone, keep)

    def model_in_service(self, version: str) -> None:
        """The embedder now serving (after a model swap): the outlet's card and the metrics."""
        rec, outlet = self.outlet.recorder, self.outlet
        rec.gauge("model_info", 0, model_version=outlet.card.version, role="embedder")
        outlet.card = registry.peek_card(registry.name_for(version))
        rec.gauge("model_info", 1, model_version=version, role="embedder")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)  # a check stuck on an unreachable Redis is left behind (daemon)
