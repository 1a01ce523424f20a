"""Run the Ray pipeline on a three-node cluster on this machine and remove a node mid-run.

Run by ``test_multinode.py`` in a subprocess (the pytest process already holds a Ray cluster):

    python multinode_run.py --set KEY=VALUE ...   # the pipeline config overrides

Cluster (``ray.cluster_utils.Cluster``): a head with no CPUs (the driver only), a ``decode`` node
(1 CPU) for the stream actor and two ``embed`` nodes (1 CPU each); the caller's overrides place the
actors with ``runtime.stream_resources`` / ``runtime.embedder_resources``. When the first embedding
result reaches the driver, the node holding the embedding actor is killed
(``remove_node(allow_graceful=False)``); Ray restarts the actor on the other ``embed`` node. Node
failure detection is shortened with Ray's ``RAY_health_check_*`` variables (``HEALTH_CHECK``), as
the manifests in ``deploy/`` set them (Ray's defaults took 21 s to declare the node dead).

Prints one line ``RESULT {json}``: the summary, every event id handed to the sink (repeats
included), where the actors ran, and the times of the removal and of the embeddings around it.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

import ray
from ray.cluster_utils import Cluster
from ray.exceptions import GetTimeoutError, RayActorError

from streamproc.config import load_config
from streamproc.metrics import Metric, Recorder
from streamproc.runtime import pipeline
from streamproc.runtime.driver import Loop
from streamproc.stages.emit import MemorySink

# Ray's own settings as environment variables, the way deploy/ sets them on a head node
HEALTH_CHECK = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3"}


def node_of(actor: Any, timeout: float = 60) -> str:
    """The id of the node the actor runs on, as the actor itself says."""
    ask = actor.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id())
    return str(ray.get(ask, timeout=timeout))


class NodeRemover(Recorder):
    """On the first embedding result, kills the node of the embedding actor (in another thread)."""

    def __init__(self, cluster: Cluster, nodes: dict[str, Any], loops: list[Loop]) -> None:
        self.cluster, self.nodes, self.loops = cluster, nodes, loops
        self.embeds: list[float] = []
        self.removed: dict[str, Any] = {}
        self.thread: threading.Thread | None = None

    def _observe(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        if name != "stage_seconds" or labels["stage"] != "embed":
            return
        self.embeds.append(time.monotonic())
        if self.thread is None:
            self.thread = threading.Thread(target=self._remove, daemon=True)
            self.thread.start()

    def _remove(self) -> None:
        actor = self.loops[0].pools.embedders[0]
        self.removed["stream_node"] = node_of(next(iter(self.loops[0].streams.values())).actor)
        node_id = node_of(actor)
        node = self.nodes[node_id]
        self.removed["started"] = time.monotonic()
        self.cluster.remove_node(node, allow_graceful=False)
        self.removed.update(done=time.monotonic(), node=node_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the old process may answer until it notices its raylet is gone
            try:
                now_on = node_of(actor, timeout=10)
            except (RayActorError, GetTimeoutError):
                time.sleep(0.05)
                continue
            if now_on != node_id:
                self.removed.update(new_node=now_on, answered=time.monotonic())
                return
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    config = load_config(None, args.set)
    started = time.monotonic()
    os.environ.update(HEALTH_CHECK)  # inherited by the head's processes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = {"decode": cluster.add_node(num_cpus=1, resources={"decode": 1})}
    for i in range(2):
        nodes[f"embed{i}"] = cluster.add_node(num_cpus=1, resources={"embed": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    by_id = {n.node_id: n for n in nodes.values()}
    kinds = {n.node_id: kind for kind, n in nodes.items()}
    cluster_s = time.monotonic() - started

    loops: list[Loop] = []

    class Spy(Loop):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            loops.append(self)

    pipeline.Loop = Spy  # type: ignore[misc]
    remover, sink = NodeRemover(cluster, by_id, loops), MemorySink()
    run_started = time.monotonic()
    summary = pipeline.RayRunner(config, recorder=remover, sinks=[sink]).run(duration_s=150)
    run_s = time.monotonic() - run_started
    if remover.thread is not None:
        remover.thread.join(120)
    removed = remover.removed
    t0 = removed.get("started")
    after = [t - t0 for t in remover.embeds if t0 is not None and t > removed.get("done", t0)]
    result = {
        "cluster_s": round(cluster_s, 1),
        "run_s": round(run_s, 1),
        "ok": summary.ok,
        "errors": {s.stream_id: s.error for s in summary.streams.values() if s.error},
        "frames": summary.frames,
        "decisions": sorted(d.event_id for d in summary.decisions),
        "identities": sorted({d.identity for d in summary.decisions if d.identity}),
        "sink_ids": [d.event_id for _, d in sink.seen],
        "stream_node": kinds.get(removed.get("stream_node", "")),
        "removed_node": kinds.get(removed.get("node", "")),
        "embed_node_after": kinds.get(removed.get("new_node", "")),
        "remove_s": None if t0 is None else round(removed["done"] - t0, 2),
        "actor_back_s": None if "answered" not in removed else round(removed["answered"] - t0, 2),
        "first_embed_after_s": round(after[0], 2) if after else None,
        "embeds_after": len(after),
    }
    print("RESULT " + json.dumps(result), flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
