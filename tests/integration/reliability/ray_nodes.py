"""A Ray cluster started the way ``deploy/README.md`` starts one: ``ray start --head`` and a worker
node with ``ray start --address``, as separate processes on loopback.

* ``ray_nodes``: the head (1 CPU, Ray dashboard and Ray Client server) and one worker node (2 CPUs
  and a ``worker`` resource), every port chosen free on 127.0.0.1, each node in its own temporary
  folder. Each ``ray start --block`` runs in its own process group, which is killed at the end (never
  ``ray stop``: it would stop every Ray on the machine). The nodes see ``STREAMPROC_CACHE_DIR`` of
  their own: the user cache's weights and models linked, so a trained model registers there, not in
  the user's cache. Ray's token authentication is on (``RAY_AUTH_MODE=token``, a random token), as
  deploy/kuberay/raycluster.yaml turns it on: drivers and ``ray job submit`` get the token from
  ``ray_nodes.env``.

Loaded by ``conftest.py`` of this folder, which makes ``ray_nodes`` a fixture.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from streamproc import env as sp_env

RAY = str(Path(sys.executable).with_name("ray"))
ROOT = Path(__file__).resolve().parents[3]


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 (all held open until every one is chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(socket.socket())) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def http_get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
    """Status and body of a GET (an error status too), with Ray's bearer token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass(frozen=True)
class RayNodes:
    """Addresses of the running cluster and the environment its nodes (and drivers) share."""

    gcs: str  # 127.0.0.1:PORT, what `ray start --address` and RAY_ADDRESS take
    client: str  # ray://127.0.0.1:PORT, the Ray Client server
    dashboard: str  # http://127.0.0.1:PORT, where `ray job submit` goes and /api/gcs_healthz answers
    agent_ports: dict[str, int]  # dashboard agent HTTP port per node ("head", "worker")
    env: dict[str, str]
    logs: Path
    ray: str = RAY  # the `ray` command of this environment

    def get(self, url: str, with_token: bool = False) -> tuple[int, str]:
        return http_get(url, self.env["RAY_AUTH_TOKEN"] if with_token else None)


def cluster_env(cache: Path) -> dict[str, str]:
    """This process's environment, plus what every node and driver of the cluster gets."""
    user_cache = sp_env.cache_dir()
    (cache / "models").mkdir(parents=True)
    for name in ("weights", "downloads"):
        if (user_cache / name).is_dir():
            (cache / name).symlink_to(user_cache / name)
    for item in (user_cache / "models").glob("*"):
        if item.name == "registry.json":
            shutil.copy(item, cache / "models" / item.name)
        else:
            (cache / "models" / item.name).symlink_to(item)
    variables = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "STREAMPROC_RAY_ADDRESS")}
    pythonpath = [str(ROOT), *filter(None, variables.get("PYTHONPATH", "").split(os.pathsep))]
    variables.update(
        PYTHONPATH=os.pathsep.join(dict.fromkeys(pythonpath)),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), variables.get("PATH", "")]),
        STREAMPROC_CACHE_DIR=str(cache),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_TRAIN_V2_ENABLED="1",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",  # tests/conftest.py sets 0, which refuses worker nodes
        PYTHONUNBUFFERED="1",
    )
    return variables


def node_ports() -> list[str]:
    """The ports a node binds, all free ones on 127.0.0.1 (Ray's defaults collide between clusters)."""
    names = ("node-manager", "object-manager", "metrics-export", "runtime-env-agent", "dashboard-agent-grpc")
    ports = free_ports(len(names))
    return [f"--{name}-port={port}" for name, port in zip(names, ports, strict=True)]


def start_node(args: list[str], variables: dict[str, str], log: IO[str]) -> subprocess.Popen[str]:
    """``ray start ... --block`` in a process group of its own."""
    return subprocess.Popen(
        [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
        env=variables,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop_node(proc: subprocess.Popen[str]) -> None:
    """Kills the node's process group: ``ray start`` and every Ray process it started."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            time.sleep(1)  # its children share the group; give them a moment before the next signal
        except subprocess.TimeoutExpired:
            continue


def wait_started(proc: subprocess.Popen[str], log: Path, timeout_s: float = 120) -> None:
    """Until ``ray start`` says the node runs (it prints that once its raylet has registered)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ray start exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        if "Ray runtime started" in log.read_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"ray start did not start within {timeout_s}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def ray_nodes() -> Iterator[RayNodes]:
    root = Path(tempfile.mkdtemp(prefix="sp-ray-"))  # short: Ray's socket paths must fit 107 bytes
    variables = cluster_env(root / "cache")
    gcs, dashboard, client, head_agent, worker_agent = free_ports(5)
    procs: list[subprocess.Popen[str]] = []
    try:
        with open(root / "head.log", "w") as log:
            head_args = [
                "--head",
                f"--port={gcs}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
                f"--dashboard-agent-listen-port={head_agent}",
                "--num-cpus=1",
                f"--object-store-memory={100 * 2**20}",
                f"--temp-dir={root / 'head'}",
                *node_ports(),
            ]
            procs.append(start_node(head_args, variables, log))
        wait_started(procs[0], root / "head.log")
        with open(root / "worker.log", "w") as log:
            worker_args = [
                f"--address=127.0.0.1:{gcs}",
                f"--dashboard-agent-listen-port={worker_agent}",
                "--num-cpus=2",
                '--resources={"worker": 1}',
                f"--object-store-memory={100 * 2**20}",
                f"--temp-dir={root / 'worker'}",
                *node_ports(),
            ]
            procs.append(start_node(worker_args, variables, log))
        wait_started(procs[1], root / "worker.log")
        yield RayNodes(
            gcs=f"127.0.0.1:{gcs}",
            client=f"ray://127.0.0.1:{client}",
            dashboard=f"http://127.0.0.1:{dashboard}",
            agent_ports={"head": head_agent, "worker": worker_agent},
            env=variables,
            logs=root,
        )
    finally:
        for proc in reversed(procs):
            stop_node(proc)
        shutil.rmtree(root, ignore_errors=True)
