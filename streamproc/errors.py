"""The one exception tree of streamproc.

    StreamprocError                 every error we raise on purpose
    +-- ConfigError                 bad config file, value or CLI flag (user fixes it)
    +-- ModelError                  weights missing, bad checksum, bad checkpoint
    |   +-- FetchError              a registry download failed (offline, nothing cached)
    |   +-- ConversionError         foreign weights do not match our architecture
    +-- InputError                  an image or video a user gave us is unusable
    +-- SourceError                 a video source failed            (retryable flag)
    |   +-- SourceDisconnected      stream dropped or stalled        (retryable)
    |   +-- DecodeError             bytes are not decodable video    (not retryable)
    +-- StageError                  a pipeline stage failed; carries stage/stream/pts
    +-- GalleryError                gallery problems
        +-- GalleryUnavailable      the store cannot be reached      (retryable)
        +-- UnknownIdentity         the named identity does not exist (not retryable)
        +-- IncompatibleModels      probe and gallery versions cannot be compared

Every message says what went wrong and, where a user can act, what to do.
"""

from __future__ import annotations


class StreamprocError(Exception):
    """Base of every error streamproc raises on purpose."""

    retryable: bool = False


class ConfigError(StreamprocError):
    """A config file, value or command-line flag is wrong."""


class ModelError(StreamprocError):
    """Weights or a checkpoint cannot be used."""


class FetchError(ModelError):
    """A registry download failed and nothing usable is cached."""


class ConversionError(ModelError):
    """Foreign weights do not fit our architecture (name or shape mismatch)."""


class InputError(StreamprocError):
    """An image or video given by the user cannot be used."""


class SourceError(StreamprocError):
    """A video source failed."""


class SourceDisconnected(SourceError):
    """The stream dropped or stalled; reconnecting may help."""

    retryable = True


class DecodeError(SourceError):
    """The input is not decodable video; retrying will not help."""


class StageError(StreamprocError):
    """A pipeline stage failed on one batch."""

    def __init__(self, message: str, *, stage: str, stream_id: str = "", pts: float | None = None):
        where = f"stage={stage}"
        if stream_id:
            where += f" stream={stream_id}"
        if pts is not None:
            where += f" pts={pts:.3f}"
        super().__init__(f"{message} ({where})")
        self.stage = stage
        self.stream_id = stream_id
        self.pts = pts


class GalleryError(StreamprocError):
    """A gallery operation failed."""


class GalleryUnavailable(GalleryError):
    """The gallery store cannot be reached; retrying may help."""

    retryable = True


class UnknownIdentity(GalleryError):
    """The named identity is not in the gallery."""


class IncompatibleModels(GalleryError):
    """Embeddings of two model versions that were not trained to be compared."""
