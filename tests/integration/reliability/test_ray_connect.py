"""Which Ray cluster ``streamproc run`` and ``streamproc train`` use: a running one is joined
without resource arguments (Ray refuses them there), a local one gets them.

The clusters live in a subprocess: this pytest process already holds the session's ``ray_cluster``.
The subprocess starts a one-node cluster with ``ray.cluster_utils.Cluster`` (as ``ray start --head``
would) and a marker resource, then calls ``connect`` as a ``ray job submit`` driver (only Ray's
``RAY_ADDRESS`` set), with ``STREAMPROC_RAY_ADDRESS``, and with neither (a new local cluster, not
the one found on the machine), each with ``runtime.num_cpus`` and ``object_store_mb`` configured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from streamproc.commands import train

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, os, sys
import ray
from ray.cluster_utils import Cluster
from streamproc.runtime.config import RuntimeConfig
from streamproc.runtime.pipeline import connect

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"existing": 1}})
runtime = RuntimeConfig(num_cpus=2, object_store_mb=128)  # sizes for a local cluster only
try:
    for case, variables in [
        ("ray job submit", {"RAY_ADDRESS": cluster.address}),
        ("STREAMPROC_RAY_ADDRESS", {"STREAMPROC_RAY_ADDRESS": cluster.address}),
        ("neither", {}),
    ]:
        for name in ("RAY_ADDRESS", "STREAMPROC_RAY_ADDRESS"):
            os.environ.pop(name, None)
        os.environ.update(variables)
        try:
            started = connect(runtime)
            res = ray.cluster_resources()
            out = {"case": case, "started": started, "existing": res.get("existing", 0), "cpus": res.get("CPU")}
            out["again"] = connect(runtime)  # already initialised: left as it is
            ray.shutdown()
        except Exception as exc:
            out = {"case": case, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)
finally:
    cluster.shutdown()
"""


def test_connect_joins_a_running_cluster_without_resource_arguments() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "STREAMPROC_RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180, env=env
    )
    results = {r["case"]: r for r in map(json.loads, filter(None, done.stdout.splitlines()))}
    assert done.returncode == 0 and len(results) == 3, done.stdout + done.stderr[-3000:]
    for case in ("ray job submit", "STREAMPROC_RAY_ADDRESS"):  # the cluster's own resources, joined
        assert results[case] == {"case": case, "started": True, "existing": 1, "cpus": 1.0, "again": False}
    assert results["neither"] == {
        "case": "neither",
        "started": True,
        "existing": 0,
        "cpus": 2.0,
        "again": False,
    }


@pytest.mark.parametrize(
    ("flag", "variables", "expected"),
    [
        (None, {}, None),
        (None, {"RAY_ADDRESS": "10.0.0.1:6379"}, "10.0.0.1:6379"),
        (None, {"STREAMPROC_RAY_ADDRESS": "ray://head:10001"}, "ray://head:10001"),
        (None, {"STREAMPROC_RAY_ADDRESS": "auto", "RAY_ADDRESS": "10.0.0.1:6379"}, "auto"),
        ("10.0.0.2:6379", {"STREAMPROC_RAY_ADDRESS": "auto"}, "10.0.0.2:6379"),
    ],
)
def test_train_finds_the_cluster_like_run(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, variables: dict[str, str], expected: str | None
) -> None:
    for name in ("RAY_ADDRESS", "STREAMPROC_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", "x.yaml", *(["--address", flag] if flag else [])])
    assert train.ray_address(args) == expected
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    assert "STREAMPROC_RAY_ADDRESS" in help_text
