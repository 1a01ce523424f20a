"""The retry policy: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import pytest

from streamproc.errors import DecodeError, SourceDisconnected
from streamproc.retry import ConstantBackoff, ExponentialBackoff, Retry, poll, server_retry


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


def test_within_s_bounds_the_time_spent_not_the_attempts() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def down() -> None:
        now[0] += 0.25  # each failing call takes a while too
        raise ConnectionError("down")

    policy = Retry(ConstantBackoff(1.0), attempts=None, within_s=5.0, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(ConnectionError):
        policy.call(down)
    assert now[0] == pytest.approx(5.25)  # 5 calls of 0.25 s and 4 waits of 1 s: a 5th wait would end at 6.25
    assert server_retry(10.0).within_s == 10.0 and server_retry().attempts is None


class FakeClock:
    """``sleep`` advances ``now``: waits are counted, never spent."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("answers", "expected", "sleeps"),
    [
        ([None, None, "up"], "up", 2),  # the first answer that is not None
        ([False], False, 0),  # a falsy answer is an answer
        ([None] * 10, None, 4),  # 1 s at 0.25 s: five looks, then it gives up
    ],
)
def test_poll_waits_for_an_answer_or_gives_up(answers: list[object], expected: object, sleeps: int) -> None:
    clock = FakeClock()
    left = iter(answers)
    found = poll(lambda: next(left), within_s=1.0, every_s=0.25, sleep=clock.sleep, clock=lambda: clock.now)
    assert found == expected and clock.slept == [0.25] * sleeps
