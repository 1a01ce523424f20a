"""How soon frames flow again after an RTSP server comes back: within 5 s, with the default policy.

The product's own reconnect policy (``SourceConfig`` defaults: exponential backoff from
``reconnect_backoff_s`` capped at ``reconnect_backoff_cap_s``, forever) runs unchanged; an observer
on it starts the server again at the worst moment: just as a wait of the full cap begins, after the
backoff has grown to it. The time from the server accepting connections again to the first frame
decoded from the new connection is printed and attached to the report as a property.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from streamproc.sources import SourceConfig, VideoSource

pytestmark = pytest.mark.integration

RECONNECT_LIMIT_S = 5.0  # the bound: frames again within 5 s of the server's return


def test_frames_flow_within_5s_of_the_server_return(
    rtsp_server: Callable[..., Any], record_property: Callable[[str, object], None]
) -> None:
    server = rtsp_server()
    config = SourceConfig(uri=server.url, batch_frames=4)  # default timeouts and backoff
    assert config.reconnect_backoff_cap_s + 2.0 < RECONNECT_LIMIT_S, "the cap alone eats the budget"
    source = VideoSource(config)
    waits: list[float] = []
    at_cap = threading.Event()

    def observe(failures: int, exc: BaseException, wait: float) -> None:
        waits.append(wait)
        if wait >= config.reconnect_backoff_cap_s:
            at_cap.set()

    source.retry.on_retry = observe
    returned_at: list[float] = []

    def bring_back() -> None:
        if at_cap.wait(30):
            server.start()  # returns once the port accepts connections
            returned_at.append(time.monotonic())

    batches = iter(source)
    try:
        seen = 0
        while seen < 10:
            seen += len(next(batches))
        server.stop()
        stopped_at = time.monotonic()
        restarter = threading.Thread(target=bring_back, daemon=True)
        restarter.start()
        deadline = stopped_at + 45
        first_after: float | None = None
        while first_after is None:
            assert time.monotonic() < deadline, f"no frame after the restart: stats={source.stats}"
            next(batches)
            if returned_at and source.stats["reconnects"] >= 1:
                first_after = time.monotonic()
        restarter.join(5)
    finally:
        source.close()

    reconnect_s = first_after - returned_at[0]
    down_s = returned_at[0] - stopped_at
    print(
        f"\nRTSP server down {down_s:.2f}s; {len(waits)} failed reconnects (waits {[round(w, 2) for w in waits]}); "
        f"first frame {reconnect_s:.2f}s after the server accepted again "
        f"(limit {RECONNECT_LIMIT_S:g}s, backoff cap {config.reconnect_backoff_cap_s:g}s)"
    )
    record_property("rtsp_reconnect_after_return_s", round(reconnect_s, 3))
    assert max(waits) == config.reconnect_backoff_cap_s, "the backoff never reached its cap"
    assert source.stats["reconnects"] == 1
    assert reconnect_s < RECONNECT_LIMIT_S
