"""The gallery: identities and embeddings in Redis (``MemoryGalleryStore``: in this process, for tests),
searched by an in-memory exact k-NN index per replica.

Names are re-exported lazily, so ``import streamproc.gallery.quantize`` does not pull in redis or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ChangeEvent": "base",
    "Changes": "base",
    "GalleryStore": "base",
    "Identity": "base",
    "IdentityRows": "base",
    "Match": "base",
    "Unknowns": "base",
    "Cluster": "cluster",
    "agglomerate": "cluster",
    "cluster_unknowns": "cluster",
    "promote": "cluster",
    "GalleryConfig": "config",
    "EmbeddedRedis": "embedded",
    "connect": "embedded",
    "GalleryIndex": "index",
    "MemoryGalleryStore": "memory",
    "RedisGalleryStore": "redis_store",
}
__all__ = [
    "ChangeEvent",
    "Changes",
    "Cluster",
    "EmbeddedRedis",
    "GalleryConfig",
    "GalleryIndex",
    "GalleryStore",
    "Identity",
    "IdentityRows",
    "Match",
    "MemoryGalleryStore",
    "RedisGalleryStore",
    "Unknowns",
    "agglomerate",
    "cluster_unknowns",
    "connect",
    "promote",
]

if TYPE_CHECKING:
    from streamproc.gallery.base import (
        ChangeEvent,
        Changes,
        GalleryStore,
        Identity,
        IdentityRows,
        Match,
        Unknowns,
    )
    from streamproc.gallery.cluster import Cluster, agglomerate, cluster_unknowns, promote
    from streamproc.gallery.config import GalleryConfig
    from streamproc.gallery.embedded import EmbeddedRedis, connect
    from streamproc.gallery.index import GalleryIndex
    from streamproc.gallery.memory import MemoryGalleryStore
    from streamproc.gallery.redis_store import RedisGalleryStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamproc.gallery' has no attribute {name!r}")
    return getattr(importlib.import_module(f"streamproc.gallery.{module}"), name)
