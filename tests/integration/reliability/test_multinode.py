"""A multi-node Ray cluster on one machine: decoding on one node, embedding on another, and the
embedding node killed mid-run. The run must complete with every event exactly once.

``multinode_run.py`` (run in a subprocess: this process already holds the session's Ray cluster)
starts a head and three worker nodes with ``ray.cluster_utils.Cluster``; ``runtime.stream_resources``
and ``runtime.embedder_resources`` pin the stream actor to the ``decode`` node and the embedding actor
to an ``embed`` node. It runs ``demo_video`` against the session gallery and kills the embedding
actor's node at its first result. The recovery times are printed and attached as properties.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCRIPT = Path(__file__).with_name("multinode_run.py")


def test_embedding_node_removed_mid_run(
    gallery: Any, demo_video: Path, demo_people: set[str], record_property: Callable[[str, object], None]
) -> None:
    overrides = [
        *gallery.overrides(),
        "sources=" + json.dumps([{"uri": str(demo_video)}]),
        "detect.every_k_frames=2",
        "aggregate.min_frames=3",
        "aggregate.n_frames=6",
        "runtime.embed_max_wait_ms=5",
        "runtime.max_restarts=2",
        "embedder.threads=1",
        'runtime.stream_resources={"decode": 0.01}',  # the product's placement options
        'runtime.embedder_resources={"embed": 0.01}',
    ]
    cmd = [sys.executable, str(SCRIPT)]
    for item in overrides:
        cmd += ["--set", item]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]
    r = json.loads(lines[0].removeprefix("RESULT "))
    print(
        f"\nmulti-node: cluster up in {r['cluster_s']}s; run {r['run_s']}s; stream actor on "
        f"{r['stream_node']}; killed node {r['removed_node']} (took {r['remove_s']}s); embedding actor "
        f"answered again on {r['embed_node_after']} {r['actor_back_s']}s after the kill began; first "
        f"embedding after it {r['first_embed_after_s']}s; {r['embeds_after']} embeddings after; "
        f"{len(r['decisions'])} decisions, {len(r['sink_ids'])} events to the sink "
        f"({len(r['sink_ids']) - len(set(r['sink_ids']))} repeated)"
    )
    for key in ("actor_back_s", "first_embed_after_s"):
        record_property(f"embed_node_removed_{key}", r[key])

    assert r["ok"], r["errors"]
    assert r["stream_node"] == "decode" and r["removed_node"].startswith("embed")
    assert r["embed_node_after"].startswith("embed") and r["embed_node_after"] != r["removed_node"]
    assert r["embeds_after"] > 0, "nothing was embedded after the node was removed"
    assert set(r["identities"]) == demo_people
    assert sorted(r["sink_ids"]) == r["decisions"], "an event was lost or emitted twice"
