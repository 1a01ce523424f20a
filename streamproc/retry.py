"""Retry as an injected policy: a backoff schedule plus which errors are worth retrying.

RTSP reconnects and Redis calls use the same object, and ``poll`` (wait until a condition holds: a
server answers, a process or a file is gone) is built on it; nothing else sleeps in a loop.

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

    ``attempts=None`` retries forever (live cameras); ``within_s`` also gives up once the next wait
    would end more than ``within_s`` after the first call; ``sleep`` and ``clock`` are injectable for
    tests.
    """

    backoff: Backoff = field(default_factory=ExponentialBackoff)
    attempts: int | None = 5
    within_s: float | None = None
    retryable: Callable[[BaseException], bool] = _default_retryable
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    on_retry: Callable[[int, BaseException, float], None] | None = None
    log_level: int = logging.INFO

    def call(self, fn: Callable[[], T]) -> T:
        failures, started = 0, self.clock()
        while True:
            try:
                return fn()
            except Exception as exc:
                failures += 1
                if not self.retryable(exc) or (self.attempts is not None and failures >= self.attempts):
                    raise
                wait = self.backoff.delay(failures)
                if self.within_s is not None and self.clock() - started + wait > self.within_s:
                    raise
                log.log(self.log_level, "retry %d after %s: waiting %.2fs", failures, exc, wait)
                if self.on_retry is not None:
                    self.on_retry(failures, exc, wait)
                self.sleep(wait)


def server_retry(within_s: float = 10.0) -> Retry:
    """The policy for calls to a server (Redis): jittered waits of up to 2 s, for ``within_s`` in all.
    A server restart (a second or two) is waited out; an unreachable one fails within ``within_s``."""
    return Retry(ExponentialBackoff(base=0.1, cap=2.0, jitter=True), attempts=None, within_s=within_s)


class _NotYet(Exception):
    """``poll``'s condition has no answer yet."""


def poll(
    check: Callable[[], T | None],
    within_s: float,
    every_s: float = 0.02,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T | None:
    """Call ``check`` every ``every_s`` seconds until it returns something other than None, and
    return that; None when ``within_s`` seconds passed first (``check`` runs at least once).

    >>> answers = iter([None, None, "up"])
    >>> poll(lambda: next(answers), within_s=1.0, every_s=0.0)
    'up'
    >>> poll(lambda: None, within_s=0.0) is None
    True
    """

    def attempt() -> T:
        found = check()
        if found is None:
            raise _NotYet
        return found

    policy = Retry(
        ConstantBackoff(every_s),
        attempts=None,
        within_s=within_s,
        retryable=lambda exc: isinstance(exc, _NotYet),
        sleep=sleep,
        clock=clock,
        log_level=logging.DEBUG,
    )
    try:
        return policy.call(attempt)
    except _NotYet:
        return None
