"""streamproc: face recognition in live video at scale, after FaceNet."""

from streamproc.config import Config, load_config
from streamproc.errors import StreamprocError
from streamproc.types import Faces, FrameBatch

__all__ = ["Config", "Faces", "FrameBatch", "StreamprocError", "load_config"]
__version__ = "0.1.0"
