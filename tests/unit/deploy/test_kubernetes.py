"""The Kubernetes manifests against Kubernetes' own schemas, Pod Security "restricted", and what
kustomize, NetworkPolicy, Ray's token authentication and Prometheus-Operator need from them.

* Every core object (ConfigMap, Deployment, Service, PersistentVolumeClaim, NetworkPolicy) is
  validated by ``kubernetes-validate`` against the strict JSON schemas of Kubernetes 1.29, 1.33 and
  1.37 (unknown fields are errors). Every pod template inside a RayCluster or RayJob (head, worker
  groups, submitter) is validated the same way, as the ``template`` of a core ``PodTemplate``: that is
  the type KubeRay's CRDs embed there. The KubeRay CRDs themselves are not validated: no package of
  a registry this project uses ships them (test_manifests.py checks what KubeRay needs beyond them).
* Pod Security "restricted" (the rules of the Kubernetes Pod Security Standards, written out in
  ``restricted_violations``; the checker is tested on a pod that breaks each rule).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_files import (  # tests/unit/deploy/deploy_files.py (conftest.py puts it on the path)
    ALERTS,
    KUBERAY,
    ROOT,
    containers,
    docs,
    env_of,
    find,
    kube_docs,
    kube_files,
    kustomizations,
    pod_specs,
    walk,
)

K8S_VERSIONS = ("1.29", "1.33", "1.37")
CORE_KINDS = {"ConfigMap", "Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy"}
RAY_KINDS = {"RayCluster", "RayJob"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus-Operator: checked below


def pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template (a mapping with metadata and a spec holding containers) in a resource."""
    return [n for n in walk(doc) if isinstance(n.get("spec"), dict) and "containers" in n["spec"]]


def validation_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for where, doc in kube_docs():
        assert doc["kind"] in CORE_KINDS | RAY_KINDS | OPERATOR_KINDS, f"{where}: unchecked kind"
        if doc["kind"] in CORE_KINDS:
            cases.append((where, doc))
        if doc["kind"] in RAY_KINDS:
            for i, template in enumerate(pod_templates(doc)):
                wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
                cases.append((f"{where}:template{i}", {**wrapper, "template": template}))
    return cases


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("where", "doc"), validation_cases(), ids=[w for w, _ in validation_cases()])
def test_kubernetes_schema(where: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    ("key", "value"),
    [("runAsNonRoot", "yes"), ("seccompProfile", {"kind": "RuntimeDefault"})],  # a string; a wrong key
)
def test_schema_validation_catches_a_mistake(key: str, value: Any) -> None:
    doc = next(d for _, d in validation_cases() if "template" in d)
    broken = copy.deepcopy(doc)
    broken["template"]["spec"]["containers"][0]["securityContext"][key] = value
    kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# --- Pod Security Standards: restricted -------------------------------------------------------------
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
ALLOWED_VOLUMES |= {"projected", "secret"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec out of the "restricted" Pod Security level (baseline rules included)."""
    problems = [f"host namespace {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds - ALLOWED_VOLUMES)}")
    pod_security = pod.get("securityContext", {})
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        security = {**pod_security, **c.get("securityContext", {})}
        name = c["name"]
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if security.get("runAsNonRoot") is not True or security.get("runAsUser") == 0:
            problems.append(f"{name}: must run as non-root")
        if security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        capabilities = c.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize(("where", "doc"), kube_docs(), ids=[w for w, _ in kube_docs()])
def test_pods_meet_pod_security_restricted(where: str, doc: dict[str, Any]) -> None:
    for pod in pod_specs(doc):
        assert restricted_violations(pod) == [], where


def test_restricted_check_finds_each_violation() -> None:
    pod = {
        "hostNetwork": True,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},  # no seccomp profile
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]},  # escalation allowed, caps kept
            {
                "name": "b",
                "securityContext": {
                    "privileged": True,
                    "allowPrivilegeEscalation": False,
                    "runAsUser": 0,
                    "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                },
            },
        ],
    }
    found = " | ".join(restricted_violations(pod))
    for expected in (
        "host namespace hostNetwork",
        "volume host",
        "a: allowPrivilegeEscalation",
        "a: seccompProfile",
        "a: capabilities must drop ALL",
        "a: hostPort",
        "b: privileged",
        "b: must run as non-root",
        "b: adds capabilities",
    ):
        assert expected in found, found


# --- kustomize: one place names the image ------------------------------------------------------------
def test_kustomizations_cover_every_manifest_and_image() -> None:
    image_component = KUBERAY / "image" / "kustomization.yaml"
    (images,) = [d["images"] for d in docs(image_component)]
    names = {i["name"] for i in images}
    listed = set()
    for path in kustomizations():
        (k,) = docs(path)
        resources = [(path.parent / r).resolve() for r in k.get("resources", [])]
        assert all(r.is_file() for r in resources), path
        listed |= set(resources)
        components = [(path.parent / c / "kustomization.yaml").resolve() for c in k.get("components", [])]
        pods = [c for r in resources for d in docs(r) for c in containers(d)]
        if pods:  # the image kustomize replaces is named in the component, for every container
            assert image_component.resolve() in components, f"{path}: no image component"
            assert {c["image"].split(":")[0] for c in pods} <= names, path
    assert listed == {p.resolve() for p in kube_files()}, "a manifest no kustomization applies"


# --- NetworkPolicy and token authentication --------------------------------------------------------
def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def policies_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        d
        for _, d in kube_docs()
        if d["kind"] == "NetworkPolicy" and matches(d["spec"]["podSelector"], labels)
    ]


def allowed_ports(policy: dict[str, Any], source: dict[str, str]) -> set[int] | None:
    """Ports a pod with ``source`` labels may reach (None = every port; empty = none)."""
    ports: set[int] = set()
    for rule in policy["spec"]["ingress"]:
        peers = rule.get("from")
        if peers is None or any(matches(p.get("podSelector", {}), source) for p in peers):
            if "ports" not in rule:
                return None
            ports |= {p["port"] for p in rule["ports"]}
    return ports


def test_network_policies_guard_every_ray_pod() -> None:
    driver = find("Deployment")["spec"]["template"]["metadata"]["labels"]
    stranger = {"app": "something-else"}
    for kind in RAY_KINDS:
        doc = find(kind)
        for template in pod_templates(doc.get("spec", {}).get("rayClusterSpec", doc["spec"])):
            labels = template["metadata"]["labels"]
            (policy,) = policies_for(labels)
            assert allowed_ports(policy, labels) is None, "Ray pods talk to each other on many ports"
            assert allowed_ports(policy, stranger) == set(), f"{kind}: open to any pod"
            if kind == "RayCluster":
                assert allowed_ports(policy, driver) == {10001}, "the driver reaches the Ray Client port only"
    (driver_policy,) = policies_for(driver)
    assert allowed_ports(driver_policy, stranger) == {9464}, "only /metrics is reachable on the driver"


def test_raycluster_and_driver_share_the_ray_token() -> None:
    """Ray's token authentication (RAY_AUTH_MODE=token): every Ray container and the Ray Client
    driver read the same token from one Secret (tests/integration/reliability/test_ray_cluster.py
    runs a cluster that way)."""
    users = [*containers(find("RayCluster")), *containers(find("Deployment"))]
    tokens = set()
    for c in users:
        variables = env_of(c)
        assert variables["RAY_AUTH_MODE"]["value"] == "token", c["name"]
        ref = variables["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        tokens.add((ref["name"], ref["key"]))
    assert len(tokens) == 1


# --- training ---------------------------------------------------------------------------------------
def test_rayjob_has_deadlines_retries_and_a_volume_it_can_bind() -> None:
    job, claim = find("RayJob"), find("PersistentVolumeClaim")
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1
    assert spec["submitterConfig"]["backoffLimit"] >= 1
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # what every storage class offers
    users = [
        g
        for g in spec["rayClusterSpec"]["workerGroupSpecs"] + [spec["rayClusterSpec"]["headGroupSpec"]]
        if any(
            v.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]
            for v in g["template"]["spec"].get("volumes", [])
        )
    ]
    (group,) = users  # a ReadWriteOnce volume: one pod mounts it, and the driver runs there
    assert group.get("replicas", 1) == group["maxReplicas"] == 1
    wanted = json.loads(spec["entrypointResources"])
    offered = json.loads(json.loads(group["rayStartParams"]["resources"]))
    assert wanted.items() <= offered.items()


# --- Prometheus-Operator ------------------------------------------------------------------------------
def prometheus_rule_text() -> str:
    """deploy/kuberay/monitoring/prometheusrule.yaml as it must be: alerts.yml's groups."""

    class Block(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Block.add_representer(str, text)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "streamproc",
            "labels": {"app.kubernetes.io/name": "streamproc", "app.kubernetes.io/component": "monitoring"},
        },
        "spec": {"groups": yaml.safe_load(ALERTS.read_text())["groups"]},
    }
    header = (
        "# For Prometheus-Operator: the rules of deploy/prometheus/alerts.yml (the source, with comments) as a\n"
        "# PrometheusRule. Written by `python tests/unit/deploy/test_kubernetes.py` from alerts.yml; the tests\n"
        "# fail when the two differ. Your Prometheus resource must select it (its ruleSelector; with\n"
        '# kube-prometheus-stack, add the "release" label it looks for).\n'
    )
    return header + yaml.dump(doc, Dumper=Block, sort_keys=False, width=110)


RULE_FILE = KUBERAY / "monitoring" / "prometheusrule.yaml"


def test_prometheusrule_matches_alerts_yml() -> None:
    assert RULE_FILE.read_text() == prometheus_rule_text(), "run: python tests/unit/deploy/test_kubernetes.py"


def test_servicemonitor_scrapes_the_metrics_service() -> None:
    monitor, service = find("ServiceMonitor"), find("Service")
    assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    # the job label the alerts (up{job="streamproc"}) and the dashboard expect
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "streamproc"


if __name__ == "__main__":  # rewrite the PrometheusRule after editing alerts.yml
    RULE_FILE.write_text(prometheus_rule_text())
    print(f"wrote {RULE_FILE.relative_to(ROOT)}")
