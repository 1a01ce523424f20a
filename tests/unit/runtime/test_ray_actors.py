"""The pieces of the Ray runner that need no cluster: micro-batching, pool choice and resource planning."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest

from streamproc.errors import ConfigError
from streamproc.runtime.config import RuntimeConfig
from streamproc.runtime.pipeline import Placement, plan
from streamproc.runtime.ray_actors import MicroBatcher, RayPool


def run_concurrently(batcher: MicroBatcher, sizes: list[int]) -> list[np.ndarray]:
    async def main() -> list[np.ndarray]:
        requests = [batcher.submit(np.full((n, 2), i, np.float32)) for i, n in enumerate(sizes)]
        return list(await asyncio.gather(*requests))

    return asyncio.run(main())


def test_concurrent_requests_share_one_model_call() -> None:
    seen: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return x * 10

    batcher = MicroBatcher(model, max_items=64, max_wait_s=0.05)
    out = run_concurrently(batcher, [2, 3, 1])
    assert seen == [6] and batcher.calls == 1
    assert [o.shape for o in out] == [(2, 2), (3, 2), (1, 2)]
    assert [float(o[0, 0]) for o in out] == [0.0, 10.0, 20.0]  # each caller gets its own rows back


def test_batches_never_exceed_max_items_nor_split_requests() -> None:
    seen: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return x

    batcher = MicroBatcher(model, max_items=4, max_wait_s=0.05)
    out = run_concurrently(batcher, [3, 3, 1, 6])
    # in arrival order: 3 alone (3 + 3 > 4), then 3 + 1, then the 6 alone (too large, never split)
    assert seen == [3, 4, 6] and batcher.calls == 3
    assert [o[:, 0].tolist() for o in out] == [[0.0] * 3, [1.0] * 3, [2.0], [3.0] * 6]  # each its own rows


def test_a_model_error_reaches_every_caller_of_that_batch() -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(broken, max_items=8, max_wait_s=0.01)

    async def main() -> list[object]:
        calls = [batcher.submit(np.zeros((1, 2))) for _ in range(3)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_a_request_that_waited_through_a_model_call_goes_when_the_call_ends() -> None:
    """Its wait counts from its arrival: the next call starts when the model is free, without a
    second ``max_wait_s``, so a request that comes later goes in a call of its own.

    The model takes 0.8 s a call and a batch waits at most 0.3 s: C comes during the first call,
    so its wait is over when that call ends; D comes 0.15 s after. Counting C's wait from the end
    of the call instead held C until D joined it ([2, 2])."""
    seen: list[list[float]] = []

    def model(x: np.ndarray) -> np.ndarray:
        seen.append(x[:, 0].tolist())
        time.sleep(0.8)
        return x

    batcher = MicroBatcher(model, max_items=2, max_wait_s=0.3)

    async def later(delay: float, value: float) -> np.ndarray:
        await asyncio.sleep(delay)
        return await batcher.submit(np.full((1, 2), value, np.float32))

    async def main() -> None:
        await asyncio.gather(later(0, 0), later(0, 1), later(0.05, 2), later(0.95, 3))

    asyncio.run(main())
    assert seen == [[0.0, 1.0], [2.0], [3.0]]


@pytest.mark.parametrize(
    ("settings", "streams", "cpus", "gpus", "expected"),
    [
        ({}, 1, 2, 0, Placement(1.0, 1.0, 0.0)),
        ({}, 2, 2, 0, Placement(0.5, 1.0, 0.0)),
        ({}, 4, 16, 1, Placement(1.0, 1.0, 1.0)),
        ({"gpus_per_embedder": 0}, 1, 16, 1, Placement(1.0, 1.0, 0.0)),
        ({"embedders": 2, "embedder_cpus": 2}, 3, 16, 0, Placement(1.0, 2.0, 0.0)),
        ({"stream_cpus": 0.25}, 4, 2, 0, Placement(0.25, 1.0, 0.0)),
        (
            {"detectors": 2, "detector_cpus": 0.5, "embedder_cpus": 0.5, "stream_cpus": 0.5},
            1,
            2,
            0,
            Placement(0.5, 0.5, 0.0, 0.5),
        ),
        ({"detectors": 2}, 1, 2, 0, ConfigError),  # 2 detectors + 1 embedder x 1 CPU > 2
        ({}, 1, 1, 0, ConfigError),  # the embedder takes the only CPU
        ({"stream_cpus": 1}, 2, 2, 0, ConfigError),
        ({"embedders": 2, "gpus_per_embedder": 1}, 1, 8, 1, ConfigError),
    ],
)
def test_plan(
    settings: dict[str, float], streams: int, cpus: float, gpus: float, expected: Placement | type[Exception]
) -> None:
    runtime = RuntimeConfig.model_validate(settings)
    if isinstance(expected, Placement):
        assert plan(runtime, streams, cpus, gpus) == expected
    else:
        with pytest.raises(expected):
            plan(runtime, streams, cpus, gpus)


def test_a_stream_spreads_its_calls_over_the_pool_in_turn() -> None:
    chosen: list[int] = []
    actors = [
        SimpleNamespace(embed=SimpleNamespace(remote=lambda data, i=i: chosen.append(i) or (i, data)))
        for i in range(3)
    ]
    starts = set()
    for _ in range(20):  # another stream, another first actor
        chosen.clear()
        pool = RayPool(actors, "embed")
        for k in range(6):
            pool.submit(k)
        assert sorted(chosen) == [0, 0, 1, 1, 2, 2] and chosen[:3] == chosen[3:], chosen
        starts.add(chosen[0])
    assert starts == {0, 1, 2}, "every stream's first call went to the same actor"
