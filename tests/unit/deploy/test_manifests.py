"""The deployment files agree with each other and with the package.

Schemas are checked elsewhere (test_kubernetes.py: Kubernetes' own; test_dashboards.py: promtool);
here, what no schema knows: one image, one metrics port, one Redis secret and one non-root user id
everywhere; what KubeRay needs beyond its schema (string rayStartParams, replica bounds, GPU
tolerations); the Dockerfiles pin torch as pyproject.toml does, pin their apt packages and have a
health check; the Ray cluster launcher file passes Ray's own schema and installs its provider's SDK;
the run configuration shipped in the ConfigMap is a valid streamproc config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import (  # tests/unit/deploy/deploy_files.py (conftest.py puts it on the path)
    CLUSTER,
    DEPLOY,
    DOCKER,
    DOCKERFILES,
    IMAGE,
    PROMETHEUS_K8S,
    RAY_KINDS,
    README,
    REDIS_SECRET,
    ROOT,
    YAML_FILES,
    build_args,
    containers,
    dockerfile,
    docs,
    env_of,
    find,
    kube_docs,
    metrics_port,
    pod_specs,
    pyproject_pin,
)

from streamproc import env
from streamproc.config import Config


def test_every_deploy_file_is_checked() -> None:
    expected = {
        "kuberay/raycluster.yaml",
        "kuberay/run-deployment.yaml",
        "kuberay/networkpolicy.yaml",
        "kuberay/train/rayjob-train.yaml",
        "kuberay/monitoring/servicemonitor.yaml",
        "kuberay/monitoring/prometheusrule.yaml",
        "ray/cluster.yaml",
        "prometheus/prometheus.yml",
        "prometheus/prometheus-kubernetes.yml",
        "prometheus/alerts.yml",
    }
    yaml_files = {str(p.relative_to(DEPLOY)) for p in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]}
    assert expected <= yaml_files
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.cuda"}


# --- Kubernetes / KubeRay --------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "doc"), kube_docs(), ids=[w for w, _ in kube_docs()])
def test_kubernetes_resource_header(where: str, doc: dict[str, Any]) -> None:
    assert doc["kind"], where
    assert doc["metadata"]["name"], where
    assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "streamproc", where
    if doc["kind"] in RAY_KINDS:
        assert doc["apiVersion"] == "ray.io/v1", where


def check_ray_cluster_spec(spec: dict[str, Any], where: str) -> None:
    ray_minor = re.search(r"ray\[[a-z,]+\]>=(\d+\.\d+)", pyproject_pin("ray"))
    assert ray_minor is not None
    assert spec["rayVersion"].startswith(ray_minor.group(1) + "."), f"{where}: rayVersion vs pyproject.toml"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"], where
    groups = spec["workerGroupSpecs"]
    assert groups, where
    for group in [head, *groups]:
        # KubeRay passes rayStartParams to `ray start` verbatim: values must be strings
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), where
    for group in groups:
        assert group["groupName"] and group["template"]["spec"]["containers"], where
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    gpu_groups = [g for g in groups if gpus(g)]
    assert gpu_groups, f"{where}: no worker group requests nvidia.com/gpu"
    for g in gpu_groups:
        assert any(t.get("key") == "nvidia.com/gpu" for t in g["template"]["spec"].get("tolerations", []))


def gpus(group: dict[str, Any]) -> int:
    """GPUs of one pod of a worker group (the nvidia.com/gpu limits of its containers)."""
    return sum(
        int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers(group)
    )


def test_raycluster_has_head_cpu_and_gpu_groups() -> None:
    cluster = find("RayCluster")
    check_ray_cluster_spec(cluster["spec"], "raycluster.yaml")
    groups = cluster["spec"]["workerGroupSpecs"]
    cpu_only = [g for g in groups if not gpus(g)]
    assert cpu_only, "raycluster.yaml: no CPU worker group for the stream actors"
    head_ports = {
        p["name"]: p["containerPort"] for p in containers(cluster["spec"]["headGroupSpec"])[0]["ports"]
    }
    assert {"gcs-server", "dashboard", "client", "sp-metrics"} <= set(head_ports)
    # KubeRay names Ray's own metrics port (8080) "metrics": a container port of that name shadows it
    assert "metrics" not in head_ports


HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}


def test_every_ray_head_detects_dead_nodes_in_seconds() -> None:
    """Ray's default node-failure detection took 21 s in tests/integration/reliability/test_multinode.py;
    these settings (the same variables, at 500 ms x 3 there) are read by the head's GCS."""
    for kind in ("RayCluster", "RayJob"):
        doc = find(kind)
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        head_env = env_of(containers(spec["headGroupSpec"])[0])
        assert {k: head_env.get(k, {}).get("value") for k in HEALTH_CHECK} == HEALTH_CHECK, kind
    start = " ".join(docs(CLUSTER)[0]["head_start_ray_commands"])
    assert all(f"{k}={v}" in start for k, v in HEALTH_CHECK.items()), start


def test_rayjob_trains_with_the_finetune_config() -> None:
    job = find("RayJob")
    spec = job["spec"]
    check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob-train.yaml")
    command = spec["entrypoint"].split()
    assert command[:3] == ["streamproc", "train", "--config"]
    path = command[3]
    assert path.endswith("configs/train/finetune-irv1.yaml")
    if path.startswith("/"):  # inside the image: the shipped configs (streamproc/configs) are copied there
        target = path.split("/configs/")[0] + "/configs"
        for dockerfile_path in DOCKERFILES:
            copies = [a for k, a in dockerfile(dockerfile_path)[-1] if k == "COPY"]
            assert any(a.split()[-2:] == ["streamproc/configs", target] for a in copies), (
                f"{dockerfile_path.name}: {target}"
            )
    assert spec["shutdownAfterJobFinishes"] is True
    config_file = ROOT / "configs" / "train" / "finetune-irv1.yaml"
    if not config_file.is_file():
        pytest.skip(f"{config_file.relative_to(ROOT)} is not written yet")
    from streamproc.training.config import load_train_config

    overrides = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    config = load_train_config(config_file, overrides)
    cluster_gpus = sum(g["replicas"] * gpus(g) for g in spec["rayClusterSpec"]["workerGroupSpecs"])
    assert config.use_gpu and config.num_workers <= cluster_gpus, "one GPU per Ray Train worker"
    mounts = {m["mountPath"] for c in containers(spec["rayClusterSpec"]) for m in c.get("volumeMounts", [])}
    for where in (config.data, config.output):
        assert any(str(where).startswith(m + "/") for m in mounts), f"{where} is on no mounted volume"


def test_run_deployment_is_a_single_driver_on_the_raycluster() -> None:
    deployment, cluster = find("Deployment"), find("RayCluster")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (driver,) = containers(deployment)
    assert driver["command"][:2] == ["streamproc", "run"]
    head = containers(cluster["spec"]["headGroupSpec"])[0]
    client_port = {p["name"]: p["containerPort"] for p in head["ports"]}["client"]
    address = env_of(driver)["STREAMPROC_RAY_ADDRESS"]["value"]
    assert address == f"ray://{cluster['metadata']['name']}-head-svc:{client_port}"


def test_run_configmap_is_a_valid_streamproc_config(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment, configmap = find("Deployment"), find("ConfigMap")
    (driver,) = containers(deployment)
    config_path = Path(driver["command"][driver["command"].index("--config") + 1])
    (mount,) = [m for m in driver["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    (volume,) = [v for v in pod_specs(deployment)[0]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    raw = yaml.safe_load(configmap["data"][config_path.name])
    for source in raw["sources"]:  # camera URLs with passwords come from a Secret, through the driver's env
        if "uri_env" in source:
            variable = env_of(driver)[source["uri_env"]]
            assert variable["valueFrom"]["secretKeyRef"]["name"], source
            monkeypatch.setenv(source["uri_env"], "rtsp://user:password@camera.invalid:554/stream")
        else:
            assert "@" not in source["uri"], "a password in the ConfigMap: use uri_env and a Secret"
    config = Config.model_validate(raw)
    assert config.sources, "the run configuration needs at least one source"
    assert config.runtime.runner == "ray"
    assert config.emit.stream_maxlen is not None, "cap the event stream (data retention)"
    assert config.gallery.retain_crops is False


def test_metrics_service_selects_the_driver() -> None:
    service, deployment = find("Service"), find("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    target = yaml.safe_load(PROMETHEUS_K8S.read_text())["scrape_configs"][0]["static_configs"][0]["targets"][
        0
    ]
    assert target.split(":")[0] == service["metadata"]["name"]


# --- consistency across files ----------------------------------------------------------------------
def test_one_image_everywhere() -> None:
    images = {c["image"] for _, d in kube_docs() for c in containers(d)}
    assert images == {IMAGE}  # kustomize replaces it (test_kubernetes.py checks every one is covered)
    name = IMAGE.split(":")[0]
    build = re.findall(
        rf"docker build -f deploy/docker/(Dockerfile\.\w+) -t ({re.escape(name)}:\S+)", README.read_text()
    )
    assert ("Dockerfile.cuda", IMAGE) in build, "README.md must build the image the manifests use"
    for path in DOCKERFILES:
        assert f"-t {name}:" in path.read_text(), f"{path.name}: document its build command and tag"


def test_one_metrics_port_everywhere() -> None:
    port = metrics_port()
    named = [
        p
        for _, d in kube_docs()
        for c in containers(d)
        for p in c.get("ports", [])
        if p["name"] == "sp-metrics"
    ]
    assert named and {p["containerPort"] for p in named} == {port}
    service = find("Service")
    assert {p["port"] for p in service["spec"]["ports"] if p["name"] == "sp-metrics"} == {port}
    for path in DOCKERFILES:
        exposed = [a for k, a in dockerfile(path)[-1] if k == "EXPOSE"]
        assert exposed == [str(port)], f"{path.name}: EXPOSE {exposed}"
    (driver,) = containers(find("Deployment"))
    assert f"metrics.port={port}" in driver["command"]
    assert f"metrics.port={port}" in CLUSTER.read_text()
    assert f"metrics.port={port}" in README.read_text()


def test_container_variable_references_are_defined() -> None:
    """Kubernetes leaves an undefined $(NAME) in a command as it is, silently."""
    for where, doc in kube_docs():
        for c in containers(doc):
            refs = set(re.findall(r"\$\((\w+)\)", " ".join(c.get("command", []) + c.get("args", []))))
            assert refs <= set(env_of(c)), f"{where} {c['name']}: {refs - set(env_of(c))} undefined"
            if "POD_IP" in env_of(c):
                assert env_of(c)["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_one_redis_secret_everywhere() -> None:
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for _, d in kube_docs()
        for c in containers(d)
        for e in c.get("env", [])
        if e["name"] == "STREAMPROC_REDIS_URL"
    ]
    assert refs and {(r["name"], r["key"]) for r in refs} == {REDIS_SECRET}
    for kind in ("RayCluster", "Deployment"):
        for c in containers(find(kind)):
            source = env_of(c)["STREAMPROC_REDIS_URL"]["valueFrom"]["secretKeyRef"]
            assert (source["name"], source["key"]) == REDIS_SECRET, f"{kind} {c['name']}"
    assert f"generic {REDIS_SECRET[0]} --from-literal={REDIS_SECRET[1]}=" in README.read_text()


def test_only_known_streamproc_variables() -> None:
    known = set(re.findall(r"^(STREAMPROC_[A-Z_]+)", env.__doc__ or "", re.MULTILINE))
    texts = [p.read_text() for p in [*YAML_FILES, *DOCKERFILES, README]]
    used = {name for text in texts for name in re.findall(r"\bSTREAMPROC_[A-Z_]+\b", text)}
    assert used <= known, f"not read by streamproc.env: {sorted(used - known)}"


def test_pods_run_as_the_image_user() -> None:
    uids = set()
    for path in DOCKERFILES:
        final = dockerfile(path)[-1]
        (uid,) = {int(u) for _, a in final if "useradd" in a for u in re.findall(r"--uid (\d+)", a)}
        user = [a for k, a in final if k == "USER"]
        assert user and user[-1] not in ("root", "0"), f"{path.name} runs as root"
        uids.add(uid)
    assert len(uids) == 1 and 0 not in uids
    for where, doc in kube_docs():
        for pod in pod_specs(doc):
            security = pod["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert {security["runAsUser"]} == uids, where


def test_ray_extras_for_the_cluster_path() -> None:
    """Ray Client (ray://, the KubeRay driver), the dashboard agent (KubeRay's probes) and the job CLI
    (RayJob submitter, ray job submit) come with ray[client] and ray[default]; the images install the
    package with these dependencies (tests/integration/reliability/test_ray_cluster.py uses them all)."""
    extras = re.fullmatch(r"ray\[([a-z,]+)\]>=2\.60,<2\.61", pyproject_pin("ray"))
    assert extras is not None and {"default", "client", "train"} <= set(extras.group(1).split(","))


# --- Dockerfiles -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_torch_with_the_package(path: Path) -> None:
    pin = pyproject_pin("torch")
    assert pin == "torch==2.13.0"
    args = build_args(dockerfile(path))
    runs = [a for stage in dockerfile(path) for k, a in stage if k == "RUN"]
    for key, value in args.items():
        runs = [r.replace(f"${{{key}}}", value) for r in runs]
    installs = [r for r in runs if re.search(r"pip install .* \.(\s|$)", r + " ")]
    assert installs, f"{path.name}: no `pip install ... .` of the package"
    for run in runs:
        if "pip install" in run and ("torch" in run or run in installs):
            assert pin in run.split(), f"{path.name}: torch must be pinned in the same command: {run}"
    (final_from,) = [a for k, a in dockerfile(path)[-1] if k == "FROM"]
    base = final_from.split()[0]
    for key, value in args.items():
        base = base.replace(f"${{{key}}}", value)
    if path.name.endswith("cuda"):
        assert base.startswith(("nvidia/cuda:", "rayproject/ray:")), base
        assert any(re.search(r"download\.pytorch\.org/whl/cu\d+\b", r) for r in installs), installs
    else:
        assert any("download.pytorch.org/whl/cpu" in r for r in installs)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runtime_stage(path: Path) -> None:
    stages = dockerfile(path)
    assert len(stages) >= 3, f"{path.name}: expected a build stage and a runtime stage"
    final = stages[-1]
    keys = [k for k, _ in final]
    assert keys.index("USER") > max(i for i, k in enumerate(keys) if k in ("RUN", "COPY")), (
        f"{path.name}: USER must follow the last RUN/COPY"
    )
    workdir = [a for k, a in final if k == "WORKDIR"][-1]
    assert any(
        a.split()[-2:] == ["streamproc/configs", f"{workdir}/configs"] for k, a in final if k == "COPY"
    )
    assert any("STREAMPROC_OFFLINE=1" in a for k, a in final if k == "ENV")
    assert any("wget" in a for k, a in final if k == "RUN"), "KubeRay's probes call wget"
    (check,) = [a for k, a in final if k == "HEALTHCHECK"]
    # the endpoint KubeRay's probes use (tests/integration/reliability/test_ray_cluster.py runs it)
    assert "http://127.0.0.1:52365/api/local_raylet_healthz" in check, check


APT_INSTALL = re.compile(r"apt-get install ((?:-\S+ )*)(.+?)(?:&&|$)")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_apt_packages(path: Path) -> None:
    runs = [a for stage in dockerfile(path) for k, a in stage if k == "RUN" and "apt-get install" in a]
    assert runs, f"{path.name}: no apt-get install"
    for run in runs:
        match = APT_INSTALL.search(run)
        assert match is not None, run
        packages = [p.strip("'\"") for p in match.group(2).split()]
        unpinned = [p for p in packages if not re.fullmatch(r"[a-z0-9.+-]+=[0-9][\w.+~:-]*\*?", p)]
        assert not unpinned, f"{path.name}: pin {unpinned} (package=version)"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerignore_lets_the_copied_paths_in(path: Path) -> None:
    ignore = path.with_name(path.name + ".dockerignore")
    patterns = [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    sources = {
        src.rstrip("/")
        for stage in dockerfile(path)
        for k, a in stage
        if k == "COPY" and "--from=" not in a
        for src in [w for w in a.split() if not w.startswith("--")][:-1]
    }
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    excluded = {s for s in sources if not any(s == a or s.startswith(f"{a}/") for a in allowed)}
    assert not excluded, f"{ignore.name} excludes {excluded}"


def test_dockerignore_files_agree() -> None:
    rules = [
        [line for line in p.read_text().splitlines() if line and not line.startswith("#")]
        for p in sorted(DOCKER.glob("*.dockerignore"))
    ]
    assert len(rules) == 2 and rules[0] == rules[1]


# --- Ray cluster launcher --------------------------------------------------------------------------
def test_cluster_yaml_passes_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(docs(CLUSTER)[0], schema)


def test_cluster_yaml_layout() -> None:
    (config,) = docs(CLUSTER)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any("gpu" in name for name in types if name != config["head_node_type"])
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert all("$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"] if "ray start" in c)
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert installs and all(pyproject_pin("torch") in c.split() and "streamproc" in c for c in installs)
    # the head's autoscaler imports the provider's SDK from this environment, or starts no worker
    sdk = {"aws": "boto3", "gcp": "google-api-python-client"}[config["provider"]["type"]]
    assert any(re.search(r"(^|\s|')" + re.escape(sdk) + r"\b", c) for c in installs), (
        f"{sdk} is not installed"
    )
    text = CLUSTER.read_text()
    assert "STREAMPROC_REDIS_URL=" in text and "STREAMPROC_RAY_ADDRESS=auto" in text
    assert "FILL IN" in text
