"""streamproc: face recognition in live video at scale, after FaceNet.

The public surface is below; everything else may move between releases. Heavy parts (torch,
Ray, Redis) load on first use, so ``import streamproc`` stays cheap.

>>> import streamproc
>>> streamproc.load_config(None).embedder.model
'facenet-irv1-128'
"""

import importlib
import os as _os
from typing import Any

# OpenMP threads that spin while waiting make torch crawl (20-30x measured) when several
# processes share few cores, as Ray actors do; sleeping waiters cost nothing measurable.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from streamproc.config import Config, load_config
from streamproc.errors import StreamprocError
from streamproc.types import Decision, Faces, FrameBatch

_LAZY = {
    "FacePipeline": "streamproc.faces",
    "read_image": "streamproc.faces",
    "Embedder": "streamproc.models.embedder",
    "build_detector": "streamproc.detect",
    "GalleryIndex": "streamproc.gallery.index",
    "RedisGalleryStore": "streamproc.gallery.redis_store",
    "LocalRunner": "streamproc.runtime.local",
    "RayRunner": "streamproc.runtime.pipeline",
    "PrometheusRecorder": "streamproc.metrics",
    "train": "streamproc.training.launch",
}

__all__ = ["Config", "Decision", "Faces", "FrameBatch", "StreamprocError", "load_config", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamproc' has no attribute {name!r}")
