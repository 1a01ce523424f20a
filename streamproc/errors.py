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
    +-- GalleryError                gallery problems
        +-- GalleryUnavailable      the store cannot be reached      (retryable)
        +-- UnknownIdentity         the named identity does not exist (not retryable)
        +-- IncompatibleModels      probe and gallery versions cannot be compared

Every message says what went wrong and, where a user can act, what to do. The command line prints
these as one line and exits 2. Any other exception is a bug, never dressed up as one of these: a
stage adds a note naming the stage, stream and pts to it (``Stage.__call__``), and the command line
logs its traceback and exits 1.
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


class GalleryError(StreamprocError):
    """A gallery operation failed."""


class GalleryUnavailable(GalleryError):
    """The gallery store cannot be reached; retrying may help."""

    retryable = True


class UnknownIdentity(GalleryError):
    """The named identity is not in the gallery."""


class IncompatibleModels(GalleryError):
    """Embeddings of two model versions that were not trained to be compared."""
