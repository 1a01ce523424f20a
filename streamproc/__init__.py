"""streamproc: face recognition in live video at scale, after FaceNet."""

import os as _os

# OpenMP threads that spin while waiting make torch crawl (20-30x measured) when several
# processes share few cores, as Ray actors do; sleeping waiters cost nothing measurable.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from streamproc.config import Config, load_config
from streamproc.errors import StreamprocError
from streamproc.types import Faces, FrameBatch

__all__ = ["Config", "Faces", "FrameBatch", "StreamprocError", "load_config"]
__version__ = "0.1.0"
