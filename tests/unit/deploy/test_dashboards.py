"""The Grafana dashboard and the Prometheus alerts only query series that streamproc exposes.

Every ``streamproc_*`` name in a PromQL expression must be a series of ``streamproc.metrics.METRICS``
as Prometheus sees it: counters keep their ``_total``, histograms expose ``_bucket``/``_sum``/
``_count``, gauges are plain. Label names used in selectors and in ``by``/``on`` clauses must be
labels of those metrics. ``promtool`` (Debian package ``prometheus``) checks the rules, the scrape
configurations and the dashboard's queries with Prometheus's own parser, and runs every alert's unit
tests (``alerts_test.yml``: firing and quiet cases, a healthy start included).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from streamproc.metrics import METRICS, PrometheusRecorder

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "streamproc-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"  # VMs
PROMETHEUS_K8S = DEPLOY / "prometheus" / "prometheus-kubernetes.yml"

SERIES_RE = re.compile(r"\bstreamproc_[a-z0-9_]+")
SELECTOR_RE = re.compile(r"\b(streamproc_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
CLAUSE_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
SEVERITIES = {"critical", "warning", "info"}
DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


# --- what streamproc exposes -----------------------------------------------------------------------
def catalogue_name(series: str) -> str | None:
    """The ``METRICS`` key behind a Prometheus series name, or None when there is none."""
    name = series.removeprefix("streamproc_")
    metric = METRICS.get(name)
    if metric is not None and metric.kind != "histogram":
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in METRICS and METRICS[base].kind == "histogram":
            return base
    return None


def series_labels(series: str) -> set[str]:
    name = catalogue_name(series)
    assert name is not None
    return set(METRICS[name].labels) | ({"le"} if series.endswith("_bucket") else set())


def exposed_series() -> set[str]:
    """Sample names a real ``PrometheusRecorder`` exposes after one sample of every metric."""
    rec = PrometheusRecorder()
    for name, metric in METRICS.items():
        labels = dict.fromkeys(metric.labels, "x")
        {"counter": rec.count, "gauge": rec.gauge, "histogram": rec.observe}[metric.kind](name, 1.0, **labels)
    text = generate_latest(rec.registry).decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ("streamproc_frames_decoded_total", "frames_decoded_total"),
        ("streamproc_frames_decoded", None),  # counters keep _total
        ("streamproc_tracks_open", "tracks_open"),
        ("streamproc_tracks_open_total", None),  # gauges take no suffix
        ("streamproc_stage_seconds_bucket", "stage_seconds"),
        ("streamproc_stage_seconds_sum", "stage_seconds"),
        ("streamproc_match_distance_count", "match_distance"),
        ("streamproc_stage_seconds", None),  # a histogram is only its _bucket/_sum/_count
        ("streamproc_in_flight_bucket", None),  # a gauge has no buckets
        ("streamproc_no_such_metric", None),
    ],
)
def test_catalogue_name(series: str, expected: str | None) -> None:
    assert catalogue_name(series) == expected


def test_catalogue_names_map_onto_exposed_series() -> None:
    exposed = {s for s in exposed_series() if s.startswith("streamproc_") and not s.endswith("_created")}
    assert all(catalogue_name(s) is not None for s in exposed), sorted(exposed)
    for name, metric in METRICS.items():
        if metric.kind == "counter":
            assert name.endswith("_total"), f"counter {name!r} must end in _total"
        elif metric.kind == "histogram":
            assert {f"streamproc_{name}_{s}" for s in ("bucket", "sum", "count")} <= exposed
        else:
            assert f"streamproc_{name}" in exposed


# --- the expressions -------------------------------------------------------------------------------
def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for panel in _panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def all_exprs() -> list[tuple[str, str]]:
    alerts = [(f"alert {rule.get('alert')}", str(rule.get("expr", ""))) for rule in alert_rules()]
    return dashboard_exprs() + alerts


EXPRS = all_exprs()


def expr_problems(expr: str) -> list[str]:
    """Unknown series, labels a series does not have, unbalanced brackets."""
    problems = []
    series = set(SERIES_RE.findall(expr))
    unknown = sorted(s for s in series if catalogue_name(s) is None)
    problems += [f"{s} is not a series of streamproc.metrics.METRICS" for s in unknown]
    known = series - set(unknown)
    for name, body in SELECTOR_RE.findall(expr):
        if name in known:
            extra = set(MATCHER_RE.findall(body)) - series_labels(name) - TARGET_LABELS
            problems += [f"{name} has no label {label!r}" for label in sorted(extra)]
    allowed = set().union(*(series_labels(s) for s in known)) | TARGET_LABELS
    for clause in CLAUSE_RE.findall(expr):
        labels = {label.strip() for label in clause.split(",") if label.strip()}
        problems += [f"no series here has a label {label!r}" for label in sorted(labels - allowed)]
    for opening, closing in ("()", "[]", "{}"):
        if expr.count(opening) != expr.count(closing):
            problems.append(f"unbalanced {opening}{closing}")
    return problems


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('sum by (stream) (rate(streamproc_frames_decoded_total{stream=~"$stream"}[5m]))', None),
        ("rate(streamproc_frames_decoded[5m])", "is not a series"),
        ("histogram_quantile(0.5, sum by (le) (rate(streamproc_stage_seconds[5m])))", "is not a series"),
        ('streamproc_in_flight{stream="a"}', "has no label 'stream'"),
        ("sum by (stream) (streamproc_queue_depth)", "no series here has a label 'stream'"),
        ("sum by (le, stage) (rate(streamproc_stage_seconds_bucket[5m]))", None),
        ("sum(rate(streamproc_reconnects_total[5m])", "unbalanced ()"),
    ],
)
def test_expr_problems_finds_mistakes(expr: str, problem: str | None) -> None:
    problems = expr_problems(expr)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=[where for where, _ in EXPRS])
def test_expression_uses_only_catalogue_series(where: str, expr: str) -> None:
    assert SERIES_RE.search(expr) or "up{" in expr, f"{where}: queries no streamproc series"
    assert expr_problems(expr) == [], f"{where}: {expr}"


# --- the dashboard ---------------------------------------------------------------------------------
def test_dashboard_shape() -> None:
    dash = dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    stream = variables["stream"]
    query = stream["query"]["query"] if isinstance(stream["query"], dict) else stream["query"]
    assert re.fullmatch(r"label_values\((streamproc_[a-z0-9_]+),\s*stream\)", query), query
    assert "stream" in series_labels(SERIES_RE.findall(query)[0])
    assert stream["multi"] and stream["includeAll"] and stream["allValue"] == ".*"


def test_dashboard_panels_are_well_formed() -> None:
    panels = list(_panels(dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"panel {p['title']!r} is off the grid"
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in [p, *p["targets"]]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]


@pytest.mark.parametrize(("where", "expr"), dashboard_exprs(), ids=[w for w, _ in dashboard_exprs()])
def test_dashboard_queries_follow_the_stream_variable(where: str, expr: str) -> None:
    for name in set(SERIES_RE.findall(expr)):
        if catalogue_name(name) is None or "stream" not in series_labels(name):  # unknown: reported above
            continue
        bodies = [body for series, body in SELECTOR_RE.findall(expr) if series == name]
        assert bodies and all('stream=~"$stream' in body for body in bodies), (
            f"{where}: {name} ignores $stream"
        )


def test_dashboard_covers_the_catalogue() -> None:
    shown = {catalogue_name(s) for _, expr in dashboard_exprs() for s in SERIES_RE.findall(expr)}
    missing = sorted(set(METRICS) - shown)
    assert missing == [], f"add a panel for {missing} to {DASHBOARD.name}"


# --- the alerts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r.get("alert")))
def test_alert_rule_is_complete(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Streamproc[A-Z][A-Za-z]+", rule["alert"])
    assert isinstance(rule["expr"], str) and rule["expr"].strip()
    assert DURATION_RE.match(str(rule["for"])), f"{rule['alert']}: for {rule['for']!r}"
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()


def test_alert_names_are_unique_and_cover_the_operations_issue() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    # stalled stream, no decisions, decode errors, source failures, backlog, reconnect storm
    series_of = {rule["alert"]: set(SERIES_RE.findall(rule["expr"])) for rule in alert_rules()}
    used = set().union(*series_of.values())
    for needed in (
        "streamproc_frames_decoded_total",
        "streamproc_decisions_total",
        "streamproc_decode_errors_total",
        "streamproc_source_failures_total",
        "streamproc_queue_depth",
        "streamproc_in_flight",
        "streamproc_reconnects_total",
    ):
        assert needed in used, f"no alert watches {needed}"


@pytest.mark.parametrize("path", [PROMETHEUS, PROMETHEUS_K8S], ids=lambda p: p.name)
def test_prometheus_loads_the_alerts(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    rule_files = [path.parent / f for f in config["rule_files"]]
    assert ALERTS in rule_files
    assert all(f.is_file() for f in rule_files)
    assert [job["job_name"] for job in config["scrape_configs"]] == ["streamproc"]  # up{job="streamproc"}


def test_each_platform_scrapes_only_its_own_targets() -> None:
    """A Kubernetes Service name in the VM configuration is a target that is down forever there
    (StreamprocMetricsDown never stops firing), and the other way round."""
    (vm_job,) = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    (k8s_job,) = yaml.safe_load(PROMETHEUS_K8S.read_text())["scrape_configs"]
    assert set(vm_job) & {"static_configs", "kubernetes_sd_configs"} == set() and vm_job["file_sd_configs"]
    assert "file_sd_configs" not in k8s_job and k8s_job["static_configs"]


# --- promtool (Debian package prometheus, installed by .ci/system-deps) ---------------------------------------------------------------------
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not on PATH: install Debian's 'prometheus' package (.ci/system-deps)")
    return path


def run_promtool(*args: str | Path) -> None:
    done = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_rules_and_config() -> None:
    run_promtool("check", "rules", ALERTS)
    run_promtool("check", "config", "--syntax-only", PROMETHEUS, PROMETHEUS_K8S)


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": expr.replace("$stream", ".*").replace("$__rate_interval", "1m"),
        }
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", path)


ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")  # promtool unit tests of alerts.yml


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert [(ALERT_TESTS.parent / f).resolve() for f in tests["rule_files"]] == [ALERTS.resolve()]
    cases = [case for group in tests["tests"] for case in group["alert_rule_test"]]
    for name in (rule["alert"] for rule in alert_rules()):
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never fires"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name}: no quiet case"
    healthy = [
        c["alertname"] for g in tests["tests"] if g["name"] == "healthy start" for c in g["alert_rule_test"]
    ]
    assert set(healthy) == {rule["alert"] for rule in alert_rules()}, (
        "a healthy run must be quiet for every alert"
    )


def test_alerts_pass_their_promtool_unit_tests() -> None:
    run_promtool("test", "rules", ALERT_TESTS)
