"""The Grafana dashboard and the alert rules against the service's real metric names, without a server.

Every panel query goes through ``promtool check rules`` (as a recording rule), so a PromQL syntax
error fails here in a second; every ``purchase_classifier_serve_*`` name a panel or an alert uses
must be one the service's registry exports. The integration test then runs the queries on a real
Prometheus with real data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import Metric

from infra.config import Monitoring
from infra.k8s.monitoring import DASHBOARD_DIR, DASHBOARD_FILE, SERVE, alerts
from ml.serve.metrics import ServeMetrics
from tests.monitoring.test_alert_rules import promtool

DASHBOARD = json.loads((DASHBOARD_DIR / DASHBOARD_FILE).read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
SERVE_NAME = re.compile(rf"\b{SERVE}_\w+\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}


def exported_names() -> set[str]:
    """Every series name the service's registry can expose (a family's name plus its type's suffixes)."""
    families: list[Metric] = list(ServeMetrics().registry.collect())
    return {f.name + suffix for f in families for suffix in _SUFFIXES.get(f.type, ("",))}


def as_prometheus_query(expr: str) -> str:
    """What Grafana sends: its variables replaced (a 1m rate window covers many scrapes)."""
    return expr.replace("$namespace", "purchase-classifier").replace("$__rate_interval", "1m")


def test_every_panel_query_parses(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": as_prometheus_query(target["expr"])}
        for panel in PANELS
        for target in panel["targets"]
    ]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_panel_and_alert_queries_use_only_metrics_the_service_exports() -> None:
    exported = exported_names()
    queries = [t["expr"] for p in PANELS for t in p["targets"]]
    queries += [a.expr for a in alerts("purchase-classifier", Monitoring())]
    used = {name for query in queries for name in SERVE_NAME.findall(query)}
    assert used - exported == set()
    assert {f"{SERVE}_model_ready", f"{SERVE}_shadow_comparisons_total", f"{SERVE}_confidence_bucket"} <= used


def test_dashboard_covers_what_operations_watch() -> None:
    queries = " ".join(t["expr"] for p in PANELS for t in p["targets"])
    for series in (
        "requests_total",  # traffic and errors
        "request_duration_seconds_bucket",  # latency
        "model_info",  # model version
        "predictions_total",  # category mix
        "confidence_bucket",  # confidence
        "review_flagged_total",  # review share
        "batch_size_records_bucket",  # batch sizes
    ):
        assert f"{SERVE}_{series}" in queries, series
    assert "dask_scheduler_workers" in queries


def test_every_panel_is_scoped_to_the_chosen_namespace_and_data_source() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert variables == {"datasource", "namespace"}
    for panel in PANELS:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            selectors = re.findall(r"\{([^}]*)\}", target["expr"])
            assert selectors and all('namespace="$namespace"' in s for s in selectors), target["expr"]
