"""The retry policy: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import pytest

from streamproc.errors import DecodeError, SourceDisconnected
from streamproc.retry import ConstantBackoff, ExponentialBackoff, Retry


def failing(errors: list[BaseException]):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return fn, calls


@pytest.mark.parametrize(
    ("errors", "attempts", "expected", "calls"),
    [
        ([ConnectionError(), SourceDisconnected("x")], 5, "ok", 3),
        ([DecodeError("bad")], 5, DecodeError, 1),  # not retryable
        ([ConnectionError()] * 3, 3, ConnectionError, 3),  # attempts exhausted
        ([ValueError("bug")], 5, ValueError, 1),  # programming errors are not retried
    ],
)
def test_retry_outcomes(errors: list, attempts: int, expected: object, calls: int) -> None:
    slept: list[float] = []
    fn, counter = failing(list(errors))
    policy = Retry(ConstantBackoff(0.5), attempts=attempts, sleep=slept.append)
    if isinstance(expected, type) and issubclass(expected, BaseException):
        with pytest.raises(expected):
            policy.call(fn)
    else:
        assert policy.call(fn) == expected
    assert counter["n"] == calls
    assert slept == [0.5] * (calls - 1)


def test_exponential_backoff_caps() -> None:
    b = ExponentialBackoff(base=0.5, cap=3.0)
    assert [b.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = ExponentialBackoff(base=1.0, cap=4.0, jitter=True)
    assert all(0 <= jittered.delay(3) <= 4.0 for _ in range(50))


def test_on_retry_hook_sees_each_failure() -> None:
    seen: list[int] = []
    fn, _ = failing([ConnectionError(), ConnectionError()])
    Retry(
        ConstantBackoff(0), attempts=None, sleep=lambda s: None, on_retry=lambda n, e, w: seen.append(n)
    ).call(fn)
    assert seen == [1, 2]
