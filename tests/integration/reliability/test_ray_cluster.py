"""The cluster path of ``deploy/README.md``, run for real on loopback: a head started with
``ray start --head`` (dashboard, Ray Client server) and a worker node started with
``ray start --address``.

* the health endpoints KubeRay's probes call answer ``success`` without a token (every node's
  dashboard agent ``/api/local_raylet_healthz``, the head's ``/api/gcs_healthz``; without
  ``ray[default]`` the agent runs minimal and they do not exist), while the dashboard's API refuses a
  request without the cluster's token; the Dockerfiles' HEALTHCHECK command passes on a node;
* ``streamproc run`` joins the cluster through Ray Client (``ray://``, as the KubeRay Deployment does;
  needs ``ray[client]``) and through ``RAY_ADDRESS`` (as a driver on the head does), recognises the
  people of the demo video, and its stream actor runs on the worker node;
* ``ray job submit`` (needs ``ray[default]``) runs a short ``streamproc train`` on the cluster, as the
  KubeRay RayJob submitter does, and the trained model is registered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
RayNodes = Any  # ray_nodes.py

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kuberay_probe_endpoints_answer(ray_nodes: RayNodes) -> None:
    for node, port in ray_nodes.agent_ports.items():
        assert ray_nodes.get(f"http://127.0.0.1:{port}/api/local_raylet_healthz") == (200, "success"), node
    assert ray_nodes.get(f"{ray_nodes.dashboard}/api/gcs_healthz") == (200, "success")
    nodes_url = f"{ray_nodes.dashboard}/nodes?view=summary"
    assert ray_nodes.get(nodes_url)[0] == 401, "the dashboard's API answers without the token"
    nodes = json.loads(ray_nodes.get(nodes_url, with_token=True)[1])["data"]["summary"]
    assert sum(n["raylet"]["state"] == "ALIVE" for n in nodes) == 2


def healthcheck_command(dockerfile: Path) -> str:
    """The shell command of the Dockerfile's HEALTHCHECK (its continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("HEALTHCHECK")]
    return line.split(" CMD ", 1)[1]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_docker_healthcheck_passes_on_a_ray_node(ray_nodes: RayNodes, name: str) -> None:
    command = healthcheck_command(ROOT / "deploy" / "docker" / name)
    assert ":52365/" in command and ":9464/" in command, command
    on_head = command.replace(":52365/", f":{ray_nodes.agent_ports['head']}/").replace(":9464/", ":1/")
    assert subprocess.run(["sh", "-c", on_head], timeout=30).returncode == 0, on_head
    nothing_there = command.replace(":52365/", ":1/").replace(":9464/", ":1/")
    assert subprocess.run(["sh", "-c", nothing_there], timeout=30).returncode != 0


def run_streamproc(ray_nodes: RayNodes, gallery: Any, video: Path, variables: dict[str, str]) -> str:
    overrides = [
        *gallery.overrides(),
        "sources=" + json.dumps([{"uri": str(video)}]),
        "detect.every_k_frames=2",
        "aggregate.min_frames=3",
        "aggregate.n_frames=6",
        "runtime.embed_max_wait_ms=5",
        "embedder.threads=1",
        'runtime.stream_resources={"worker": 0.01}',  # the stream actor must run on the worker node
    ]
    cmd = [sys.executable, "-m", "streamproc.cli", "run", "--runner", "ray"]
    for item in overrides:
        cmd += ["--set", item]
    done = subprocess.run(
        cmd, env={**ray_nodes.env, **variables}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize("how", ["ray client", "RAY_ADDRESS"])
def test_streamproc_run_joins_the_cluster(
    ray_nodes: RayNodes, gallery: Any, demo_video: Path, demo_people: set[str], how: str
) -> None:
    variables = (
        {"STREAMPROC_RAY_ADDRESS": ray_nodes.client}
        if how == "ray client"
        else {"RAY_ADDRESS": ray_nodes.gcs}
    )
    out = run_streamproc(ray_nodes, gallery, demo_video, variables)
    address = variables.get("STREAMPROC_RAY_ADDRESS", variables.get("RAY_ADDRESS"))
    assert f"joining the Ray cluster at {address}" in out, out[-3000:]
    found = {name for name in demo_people if f"  {name}  d=" in out}
    assert found == demo_people, out[-3000:]
    summary = [line for line in out.splitlines() if line.startswith("ray runner: ")]
    assert summary and "demo: frames 54" in out, out[-3000:]


def test_ray_job_submit_trains_on_the_cluster(ray_nodes: RayNodes, lfw_dir: Path, tmp_path: Path) -> None:
    train = [
        sys.executable,
        "-m",
        "streamproc.cli",
        "train",
        "--config",
        str(ROOT / "configs" / "train" / "nns2-scratch.yaml"),
    ]
    for item in [
        f"data={lfw_dir / 'lfw-deepfunneled'}",
        "name=cluster-smoke",
        "max_identities=8",
        "max_images_per_identity=4",
        "holdout_max_pairs=20",
        "identities_per_batch=4",
        "images_per_identity=2",
        "epochs=1",
        "steps_per_epoch=2",
        "num_workers=1",
        "progress=false",
        f"crops_cache={tmp_path / 'crops'}",
        f"output={tmp_path / 'out'}",
    ]:
        train += ["--set", item]
    cmd = [ray_nodes.ray, "job", "submit", "--address", ray_nodes.dashboard, "--", *train]
    done = subprocess.run(cmd, env=ray_nodes.env, capture_output=True, text=True, timeout=420)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "succeeded" in out and "model: cluster-smoke@s1 registered" in out, out[-3000:]
    registry = json.loads(
        (Path(ray_nodes.env["STREAMPROC_CACHE_DIR"]) / "models" / "registry.json").read_text()
    )
    assert "cluster-smoke" in registry
