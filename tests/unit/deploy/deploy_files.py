"""What the deploy tests share: the files under deploy/ and small readers for them.

Loaded by path from the test modules of this folder (tests are not a package here).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
DOCKER = DEPLOY / "docker"
CLUSTER = DEPLOY / "ray" / "cluster.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"  # VMs: file_sd targets
PROMETHEUS_K8S = DEPLOY / "prometheus" / "prometheus-kubernetes.yml"  # the Service target
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
README = DEPLOY / "README.md"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])

IMAGE = "streamproc:0.1.0-cuda"
REDIS_SECRET = ("streamproc-redis", "url")
RAY_KINDS = {"RayCluster", "RayJob", "RayService"}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomizations() -> list[Path]:
    return sorted(KUBERAY.rglob("kustomization.yaml"))


def kube_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/kuberay (kustomize's own files excluded)."""
    return sorted(p for p in KUBERAY.rglob("*.yaml") if p.name != "kustomization.yaml")


def kube_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.relative_to(KUBERAY)}:{d.get('kind')}", d) for p in kube_files() for d in docs(p)]


def find(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in kube_docs() if d["kind"] == kind]
    return doc


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for node in walk(doc) for c in node.get("containers", []) if isinstance(c, dict)]


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in walk(doc) if isinstance(node.get("containers"), list)]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def metrics_port() -> int:
    """The port of the Kubernetes scrape target: the one every other file must use."""
    (job,) = yaml.safe_load(PROMETHEUS_K8S.read_text())["scrape_configs"]
    (target,) = [t for sc in job["static_configs"] for t in sc["targets"]]
    return int(target.rsplit(":", 1)[1])


def pyproject_pin(package: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (dep,) = [d for d in deps if re.match(rf"{package}\b", d)]
    return dep


def dockerfile(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions (KEYWORD, arguments) per build stage, continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue  # comments and parser directives, also inside a continued instruction
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            lines.append(pending.strip())
        pending = ""
    stages: list[list[tuple[str, str]]] = [[]]
    for line in lines:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), args.strip()))
    return stages


def build_args(stages: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM."""
    out = {}
    for keyword, args in stages[0]:
        if keyword == "ARG" and "=" in args:
            key, value = args.split("=", 1)
            out[key] = value
    return out
