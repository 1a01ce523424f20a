"""Retry as an injected policy: a backoff schedule plus which errors are worth retrying.

RTSP reconnects and Redis calls use the same object; nothing else sleeps in a loop.

>>> policy = Retry(ExponentialBackoff(base=0.0, cap=0.0), attempts=3)
>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionError("down")
...     return "ok"
>>> policy.call(flaky)
'ok'
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from streamproc.errors import StreamprocError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Backoff(Protocol):
    def delay(self, failures: int) -> float:
        """Seconds to wait after the given number of consecutive failures (>= 1)."""
        ...


@dataclass(frozen=True)
class ConstantBackoff:
    seconds: float = 1.0

    def delay(self, failures: int) -> float:
        return self.seconds


@dataclass(frozen=True)
class ExponentialBackoff:
    """``base * 2**(failures-1)`` capped at ``cap``, with full jitter when ``jitter`` is set."""

    base: float = 0.5
    cap: float = 10.0
    jitter: bool = False

    def delay(self, failures: int) -> float:
        d = min(self.cap, self.base * (2 ** max(0, failures - 1)))
        return random.uniform(0, d) if self.jitter else d


def _default_retryable(exc: BaseException) -> bool:
    if isinstance(exc, StreamprocError):
        return exc.retryable
    return isinstance(exc, ConnectionError | TimeoutError | OSError)


@dataclass
class Retry:
    """Call a function until it succeeds, a non-retryable error occurs, or attempts run out.

    ``attempts=None`` retries forever (live cameras); ``sleep`` is injectable for tests.
    """

    backoff: Backoff = field(default_factory=ExponentialBackoff)
    attempts: int | None = 5
    retryable: Callable[[BaseException], bool] = _default_retryable
    sleep: Callable[[float], None] = time.sleep
    on_retry: Callable[[int, BaseException, float], None] | None = None

    def call(self, fn: Callable[[], T]) -> T:
        failures = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                failures += 1
                if not self.retryable(exc) or (self.attempts is not None and failures >= self.attempts):
                    raise
                wait = self.backoff.delay(failures)
                log.info("retry %d after %s: waiting %.2fs", failures, exc, wait)
                if self.on_retry is not None:
                    self.on_retry(failures, exc, wait)
                self.sleep(wait)
