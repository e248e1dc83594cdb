"""The shipped Grafana dashboard and Prometheus config name only what the exporter exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenllm.proto.v1 import cluster_pb2
from scheduler.server.metrics import JobCounters, status_metrics

MONITORING = Path(__file__).resolve().parents[2] / "examples" / "monitoring"
#: Top-level keys every dashboard JSON model has (Grafana's dashboard schema).
REQUIRED_KEYS = {
    "title": str,
    "uid": str,
    "panels": list,
    "schemaVersion": int,
    "version": int,
    "time": dict,
    "templating": dict,
    "annotations": dict,
    "editable": bool,
    "refresh": str,
    "tags": list,
}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance", "cluster"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """``{sample name: label names}`` of the exporter, from a snapshot that has every kind
    of series (live and silent nodes, a running job with an SLO, an ended one)."""
    node = cluster_pb2.NodeStatus(
        name="n",
        connected=True,
        failsafe_active=True,
        telemetry_age_s=0.1,
        phase=cluster_pb2.NODE_PHASE_LIVE,
        gpus=[cluster_pb2.GpuStatus(index=0, type="L4", power_w=50, energy_j=10)],
    )
    spec = cluster_pb2.JobSpec(name="t", kind="train", min_throughput=1)
    jobs = [
        cluster_pb2.Job(id="a", spec=spec, state="running", energy_j=5, work_units=2),
        cluster_pb2.Job(id="b", spec=spec, state="done", energy_j=5, work_units=2),
    ]
    status = cluster_pb2.ClusterStatus(nodes=[node], jobs=jobs, policy="uniform", timestamp_s=1)
    names: dict[str, set[str]] = {}
    for family in status_metrics(status, JobCounters()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def queries(node: Any) -> Iterator[str]:
    """Every PromQL expression in a dashboard (panels, annotations, variables)."""
    if isinstance(node, dict):
        if node.get("type") == "datasource":  # a variable listing data sources, no PromQL
            return
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str) and value:
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def parse(expr: str) -> tuple[set[str], set[str], list[tuple[str, set[str]]]]:
    """Metric names, grouping labels and ``(metric, matcher labels)`` of one expression
    (or of a Grafana ``label_values(expr, label)`` variable query)."""
    grouping: set[str] = set()
    variable = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", expr.strip())
    if variable:
        expr, label = variable.groups()
        grouping.add(label)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    selectors = [
        (metric, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)))
        for metric, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr)
    ]
    for labels in GROUPING.findall(expr):
        grouping.update(x.strip() for x in labels.split(",") if x.strip())
    bare = GROUPING.sub(" ", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\{?\w+\}?", " ", bare)
    bare = re.sub(r"\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b", " ", bare)
    names = {
        m.group(1)
        for m in re.finditer(r"([a-zA-Z_:][\w:]*)(\s*\()?", bare)
        if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS
    }
    return names, grouping, selectors


def test_the_query_parser() -> None:
    names, grouping, selectors = parse(
        'sum by (node) (rate(a_total{node=~"$node", gpu!="1"}[$__rate_interval])) / 3.6e6'
        " + on(job_id) group_left(name) b > bool 0"
    )
    assert names == {"a_total", "b"}
    assert grouping == {"node", "job_id", "name"}
    assert selectors == [("a_total", {"node", "gpu"})]
    assert parse("label_values(c, node)")[:2] == ({"c"}, {"node"})


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def test_dashboard_has_the_schema_top_level_keys(dashboard: dict[str, Any]) -> None:
    for key, kind in REQUIRED_KEYS.items():
        assert isinstance(dashboard.get(key), kind), key
    assert dashboard["schemaVersion"] >= 36 and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert {"type", "title", "gridPos"} <= panel.keys(), panel.get("title")
        assert panel["type"] == "row" or panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_names_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    metrics = exported()
    labels = set().union(*metrics.values()) | TARGET_LABELS
    used = set()
    exprs = list(queries(dashboard))
    assert len(exprs) > 20
    for expr in exprs:
        names, grouping, selectors = parse(expr)
        assert names, expr
        assert names <= metrics.keys(), f"{expr}: not exported: {names - metrics.keys()}"
        assert grouping <= labels, f"{expr}: no such label: {grouping - labels}"
        for metric, matchers in selectors:
            assert matchers <= metrics[metric] | TARGET_LABELS, f"{expr}: {metric} {matchers}"
        used |= names
    for must in (
        "greenllm_cluster_power_watts",
        "greenllm_budget_watts",
        "greenllm_gpu_power_limit_watts",
        "greenllm_gpu_energy_joules_total",
        "greenllm_job_work_units_total",
        "greenllm_job_energy_joules_total",
        "greenllm_job_slo_attainment_ratio",
        "greenllm_failsafe_nodes",
        "greenllm_refused_lowerings_total",
    ):
        assert must in used, f"the dashboard shows {must}"


def test_legends_name_labels_the_series_have(dashboard: dict[str, Any]) -> None:
    metrics = exported()
    labels = set().union(*metrics.values()) | TARGET_LABELS
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= labels, (panel["title"], legend - labels)


def test_prometheus_config_scrapes_the_controller() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "greenllm" and not job.get("honor_labels", False)
    (target,) = job["static_configs"][0]["targets"]
    assert target.endswith(":9464")  # ControllerConfig.metrics_port's default
