"""The model in service, as one Redis hash every running pipeline watches (rolling upgrades).

``ModelControl`` keeps ``{model, version, gallery, previous_model, previous_gallery, epoch}`` at the
gallery store's ``control:model`` key. ``streamproc models promote`` writes it; each running
pipeline reads it every ``runtime.gallery_sync_s`` (``Outlet.poll_control``) and

* swaps its embedding actors to ``model`` (start new, shift traffic, drain old) when it changed;
* matches against the ``gallery`` version's index (through the calibrated harmonic pair while the
  gallery is still the old version) and switches index when ``gallery`` changes.

No key (a fresh gallery) means "what the config says". ``epoch`` grows with every write, so a
pipeline sees each change once.

Example:
    >>> control = ModelControl(store)  # doctest: +SKIP
    >>> control.set(Serving("mobilefacenet-h128", "v2", gallery="v1"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from streamproc.errors import GalleryError
from streamproc.gallery.redis_store import RedisGalleryStore


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
