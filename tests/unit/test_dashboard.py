"""deploy/monitoring: the Grafana dashboard parses and queries only metrics a freshly built ``Metrics`` exposes
(and every one of them), and the metrics Service and ServiceMonitor fit each other and the Deployment."""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import prometheus_client
import yaml
from prometheus_client import parser

from aegis import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy/monitoring"
METRIC_NAME = re.compile(r"\baegis_[a-zA-Z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])  # rows may hold their panels


def expressions() -> list[str]:
    return [t["expr"] for p in all_panels(dashboard()["panels"]) for t in p.get("targets") or [] if t.get("expr")]


def exposed() -> tuple[set[str], set[str]]:
    """(family names, sample names) of a freshly built registry, as a scrape shows them."""
    m = metrics.Metrics()
    m.api_error("list", 500)  # the one family without fixed label values has a series once something failed
    text = prometheus_client.generate_latest(m.registry).decode()
    families = list(parser.text_string_to_metric_families(text))
    return {f.name for f in families}, {s.name for f in families for s in f.samples}


def referenced(expr: str) -> set[str]:
    """The metric names in a PromQL expression, histogram suffixes stripped."""
    names = set()
    for name in METRIC_NAME.findall(expr):
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def test_the_dashboard_is_a_grafana_dashboard_model() -> None:
    model = dashboard()
    assert model["title"] and model["uid"] == "aegis-operator" and isinstance(model["schemaVersion"], int)
    panels = list(all_panels(model["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]


def test_the_dashboard_references_only_metrics_that_exist() -> None:
    families, samples = exposed()
    known = families | samples
    for expr in expressions():
        names = referenced(expr)
        assert names, f"no AEGIS metric in {expr!r}"
        missing = {n for n in names if n not in known}
        assert not missing, f"{expr!r} references {missing}, not exposed by aegis.metrics.Metrics"


def test_the_dashboard_shows_every_metric() -> None:
    families, _ = exposed()
    shown = set().union(*(referenced(expr) for expr in expressions()))
    # A counter family is named without _total; its samples (what PromQL names) carry it.
    shown = {name.removesuffix("_total") for name in shown}
    assert families - shown == set(), "every metric has a panel"


def test_the_stage_latency_panels_are_quantiles_per_stage() -> None:
    exprs = expressions()
    for quantile in ("0.5", "0.95"):
        assert any(
            e.startswith(f"histogram_quantile({quantile},")
            and "aegis_stage_duration_seconds_bucket" in e
            and "by (le, stage)" in e
            for e in exprs
        ), quantile


def test_the_service_monitor_selects_the_metrics_service_on_the_deployments_port() -> None:
    service = yaml.safe_load((MONITORING / "metrics-service.yaml").read_text())
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert service["kind"] == "Service" and service["metadata"]["namespace"] == "aegis-system"
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    [port] = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == 9090
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # The Service selects the operator's pods; its target port is the container's (AEGIS_METRICS_PORT's default).
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/aegis/deployment.yaml").read_text()) if d]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    assert all(template["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    container_ports = {p.get("name"): p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
    assert container_ports.get(port["targetPort"]) == 9090
    # Not in deploy/aegis's kustomization: the ServiceMonitor needs the Prometheus Operator's CRDs.
    kustomization = yaml.safe_load((ROOT / "deploy/aegis/kustomization.yaml").read_text())
    assert not any("monitoring" in str(r) for r in kustomization.get("resources") or [])
