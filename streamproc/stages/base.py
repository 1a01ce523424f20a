"""The stage contract: a plain class, no Ray import.

``__init__(config)`` loads what it needs once; ``__call__(batch) -> batch`` does the work;
stateful stages key their state by ``batch.stream_id`` and expose ``reset(stream_id)``
(forget one stream, e.g. after its source ended) and ``close()`` (release everything).
The local runner and the Ray runner chain the same stage classes.

Example:
    >>> class Count(Stage):
    ...     name = "count"
    ...     def process(self, batch):
    ...         return batch
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from streamproc.errors import StreamprocError
from streamproc.types import FrameBatch


class Stage(ABC):
    """Base class: checks the batch type and the result's.

    A ``StreamprocError`` (a stage refusing its input on purpose) passes through as it is. Any other
    exception is a bug: it keeps its type and traceback, with a note naming the stage, stream and pts,
    so that it is never mistaken for a one-line user error.
    """

    name: str = "stage"

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        if not isinstance(batch, FrameBatch):
            raise TypeError(f"{self.name}: expected FrameBatch, got {type(batch).__name__}")
        try:
            out = self.process(batch)
        except Exception as exc:
            if not isinstance(exc, StreamprocError):
                where = f" pts={batch.pts[0]:.3f}" if len(batch.pts) else ""
                exc.add_note(f"in stage={self.name} stream={batch.stream_id}{where}")
            raise
        if not isinstance(out, FrameBatch):
            raise TypeError(f"{self.name}: process() must return a FrameBatch, got {type(out).__name__}")
        return out

    @abstractmethod
    def process(self, batch: FrameBatch) -> FrameBatch: ...

    def reset(self, stream_id: str) -> None:
        """Forget everything about one stream (stateless stages have nothing to forget)."""
        return None

    def close(self) -> None:
        """Release models, files and connections."""
        return None
