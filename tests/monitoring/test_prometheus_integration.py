"""A real Prometheus server on 127.0.0.1 scraping the real service and a real Dask cluster.

Two versions are trained by ``python -m ml train`` on that Dask cluster, so their metadata carries
the validation profile the drift alerts compare with; ``python -m ml serve`` serves the first as
LATEST and tries the second as the CANDIDATE in shadow mode. Prometheus
scrapes the three processes with the labels the Prometheus Operator gives (``namespace``, ``job``),
evaluates the real alert rules, and the tests query what it stored: the series must count exactly
the traffic the test drove, every rule must evaluate, and every dashboard panel must parse and show
data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from infra.config import Monitoring
from infra.k8s.common import SCHEDULER, SERVING, WORKER
from infra.k8s.monitoring import alerts, rule_groups
from ml.reference import PROFILE_KEY, review_share
from ml.registry import ModelRegistry
from ml.schema import CATEGORY
from tests.ml.serve_fixtures import MODEL, Server, start_server, tiny_data
from tests.monitoring.engines import start_logged, start_prometheus, wait_until_ready
from tests.monitoring.test_dashboard import PANELS, as_prometheus_query
from tests.support.ports import free_port

__all__ = ["tiny_data"]  # a fixture this module uses

pytestmark = pytest.mark.slow

NAMESPACE = "purchase-classifier"
REVIEW_THRESHOLD = 0.6
REQUESTS = 30
RECORDS_PER_REQUEST = 7


@dataclass
class Processes:
    """Processes started by a fixture, stopped by their handles (never by name)."""

    running: list[subprocess.Popen[bytes]]

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        return start_logged(args, log, self.running)

    def stop(self) -> None:
        for process in reversed(self.running):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@dataclass
class Monitored:
    prometheus: str
    server: Server
    latest: str
    candidate: str
    registry: ModelRegistry
    records: pd.DataFrame

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{promql}: {body}"
        return list(body["data"]["result"])

    def value(self, promql: str) -> float:
        (sample,) = self.query(promql)
        return float(sample["value"][1])

    def eventually(self, promql: str, expected: float, timeout: float = 60) -> None:
        """Wait until ``promql`` gives ``expected`` (a few scrape intervals at most)."""
        deadline = time.monotonic() + timeout
        got: Any = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            got = [float(s["value"][1]) for s in result]
            if got == [pytest.approx(expected)]:
                return
            time.sleep(0.5)
        raise AssertionError(f"{promql} = {got}, expected {expected}")


def prometheus_config(serving: str, scheduler: str, worker: str) -> dict[str, Any]:
    """Scrape jobs named and labelled as the ServiceMonitors/PodMonitor make them in the cluster."""

    def job(name: str, target: str) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE}}]}

    return {
        # Scrapes every 2 s, each allowed all of it: on a loaded machine a shorter timeout marks
        # series stale between scrapes and queries come back empty.
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            job(SERVING, serving),
            job(SCHEDULER, scheduler),
            job(f"{NAMESPACE}/{WORKER}", worker),
        ],
    }


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, tiny_data: pd.DataFrame) -> Iterator[Monitored]:
    base = tmp_path_factory.mktemp("monitoring")
    processes = Processes([])
    server: Server | None = None
    try:
        scheduler_port, scheduler_http, worker_http = free_port(), free_port(), free_port()
        address = f"tcp://127.0.0.1:{scheduler_port}"
        ml = [sys.executable, "-m", "ml"]
        scheduler = processes.start(
            [*ml, "dask", "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port),
             "--dashboard-address", f"127.0.0.1:{scheduler_http}"],
            base / "scheduler.log",
        )  # fmt: skip
        wait_until_ready(f"http://127.0.0.1:{scheduler_http}/health", scheduler, base / "scheduler.log")
        worker = processes.start(
            [*ml, "dask", "worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
             "--dashboard-address", f"127.0.0.1:{worker_http}", "--local-directory", str(base)],
            base / "worker.log",
        )  # fmt: skip
        wait_until_ready(f"http://127.0.0.1:{worker_http}/health", worker, base / "worker.log")

        data = base / "labelled.csv"
        tiny_data.to_csv(data, index=False)
        store = base / "store"
        registry = ModelRegistry(str(store), MODEL)
        versions = []
        for _ in range(2):  # each run passes the gate and moves LATEST
            trained = subprocess.run(
                [*ml, "train", "--data", str(data), "--store", str(store), "--no-search", "--scheduler", address],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert trained.returncode == 0, trained.stderr[-3000:]
            versions.append(registry.latest_version())
        latest, candidate = versions
        assert latest is not None and candidate is not None and latest != candidate
        registry.promote(latest)
        registry.propose(candidate)

        server = start_server(
            store, base / "server.log", "--review-threshold", str(REVIEW_THRESHOLD), "--candidate-mode", "shadow"
        )
        server.wait("/readyz")

        rules = {"groups": rule_groups(NAMESPACE, Monitoring(), "docs/runbook.md")}
        (base / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = prometheus_config(
            server.url.removeprefix("http://"), f"127.0.0.1:{scheduler_http}", f"127.0.0.1:{worker_http}"
        )
        (base / "prometheus.yml").write_text(yaml.safe_dump(config))
        url = start_prometheus(base / "prometheus.yml", base / "tsdb", base / "prometheus.log", processes.running)
        yield Monitored(url, server, latest, candidate, registry, tiny_data)
    finally:
        if server is not None:
            server.stop()
        processes.stop()


@pytest.fixture(scope="module")
def traffic(monitored: Monitored) -> dict[str, Any]:
    """Classify ``REQUESTS`` × ``RECORDS_PER_REQUEST`` records and send one non-JSON request."""
    records = monitored.records.drop(columns=[CATEGORY]).head(REQUESTS * RECORDS_PER_REQUEST).copy()
    # Text the model never saw in the last request: low confidence, so the review path is exercised.
    records.loc[records.index[-RECORDS_PER_REQUEST:], "description"] = [
        f"QXZ {i} VRRK PLOM" for i in range(RECORDS_PER_REQUEST)
    ]
    results: list[dict[str, Any]] = []
    with monitored.server.client() as client:
        for start in range(0, len(records), RECORDS_PER_REQUEST):
            chunk = records.iloc[start : start + RECORDS_PER_REQUEST]
            payload = {"records": json.loads(chunk.to_json(orient="records"))}
            response = client.post("/v1/classify", json=payload)
            assert response.status_code == 200, response.text
            results += response.json()["results"]
        refused = client.post("/v1/classify", content=b"records", headers={"content-type": "text/plain"})
        assert refused.status_code == 415
    return {"results": results}


def test_prometheus_stores_exactly_the_traffic_the_service_answered(
    monitored: Monitored, traffic: dict[str, Any]
) -> None:
    results = traffic["results"]
    n = len(results)
    assert n == REQUESTS * RECORDS_PER_REQUEST
    assert {r["model_version"] for r in results} == {monitored.latest}  # shadow answers are never served
    ns = f'namespace="{NAMESPACE}"'
    latest = f'{ns}, role="latest"'
    monitored.eventually(
        f'sum(purchase_classifier_serve_requests_total{{{ns}, route="/v1/classify", status="200"}})', REQUESTS
    )
    monitored.eventually(f'sum(purchase_classifier_serve_requests_total{{{ns}, status="415"}})', 1)
    # Every record is predicted by LATEST and, in shadow, by the candidate: each counted under its version.
    monitored.eventually(f"sum(purchase_classifier_serve_predictions_total{{{ns}}})", 2 * n)
    per_version = {
        (s["metric"]["model_version"], s["metric"]["role"]): float(s["value"][1])
        for s in monitored.query(f"sum by (model_version, role) (purchase_classifier_serve_predictions_total{{{ns}}})")
    }
    assert per_version == {(monitored.latest, "latest"): n, (monitored.candidate, "candidate"): n}
    shadow = f'purchase_classifier_serve_shadow_comparisons_total{{{ns}, model_version="{monitored.candidate}"}}'
    compared = {s["metric"]["result"]: float(s["value"][1]) for s in monitored.query(f"sum by (result) ({shadow})")}
    assert "error" not in compared and sum(compared.values()) == n

    by_category = {
        s["metric"]["category"]: float(s["value"][1])
        for s in monitored.query(f"sum by (category) (purchase_classifier_serve_predictions_total{{{latest}}})")
    }
    answered = pd.Series([r["category"] for r in results]).value_counts()
    assert by_category == {category: float(count) for category, count in answered.items()}

    confidence = [r["confidence"] for r in results]
    live_mean = monitored.value(
        f"sum(purchase_classifier_serve_confidence_sum{{{latest}}})"
        f" / sum(purchase_classifier_serve_confidence_count{{{latest}}})"
    )
    assert live_mean == pytest.approx(sum(confidence) / n, rel=1e-9)
    flagged = monitored.value(f"sum(purchase_classifier_serve_review_flagged_total{{{latest}}})")
    assert flagged == sum(r["needs_review"] for r in results) > 0


def test_both_versions_and_their_validation_references_reach_prometheus(
    monitored: Monitored, traffic: dict[str, Any]
) -> None:
    ns = f'namespace="{NAMESPACE}"'
    assert monitored.value(f"max(purchase_classifier_serve_model_ready{{{ns}}})") == 1
    assert monitored.value(f"max(purchase_classifier_serve_candidate_ready{{{ns}}})") == 1
    (info,) = monitored.query(f"purchase_classifier_serve_model_info{{{ns}}}")
    assert info["metric"]["version"] == monitored.latest
    references = {
        s["metric"]["model_version"]: float(s["value"][1])
        for s in monitored.query(f"purchase_classifier_serve_reference_mean_confidence{{{ns}}}")
    }
    shares = {
        s["metric"]["model_version"]: float(s["value"][1])
        for s in monitored.query(f"purchase_classifier_serve_reference_review_share{{{ns}}}")
    }
    profiles = {v: monitored.registry.metadata(v)[PROFILE_KEY] for v in (monitored.latest, monitored.candidate)}
    assert all(profile["rows"] > 0 for profile in profiles.values())
    assert references == {v: pytest.approx(p["mean_confidence"]) for v, p in profiles.items()}
    assert shares == {v: pytest.approx(review_share(p, REVIEW_THRESHOLD)) for v, p in profiles.items()}


def test_dask_scheduler_and_worker_are_scraped(monitored: Monitored) -> None:
    ns = f'namespace="{NAMESPACE}"'
    monitored.eventually(f'up{{{ns}, job="{SCHEDULER}"}}', 1)
    monitored.eventually(f'up{{{ns}, job="{NAMESPACE}/{WORKER}"}}', 1)
    monitored.eventually(f"sum(dask_scheduler_workers{{{ns}}})", 1)
    memory = monitored.query(f"dask_worker_memory_bytes{{{ns}}}")
    assert {s["metric"]["type"] for s in memory} >= {"managed", "unmanaged"}


def test_every_alert_rule_evaluates_and_none_fires_on_a_healthy_stack(
    monitored: Monitored, traffic: dict[str, Any]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        body = httpx.get(f"{monitored.prometheus}/api/v1/rules", timeout=10).json()
        rules = [r for g in body["data"]["groups"] for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    assert {r["name"] for r in rules} == {a.name for a in alerts(NAMESPACE, Monitoring())}
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    # Serving and the scheduler are up and the model is loaded: their conditions are false.
    ns = f'namespace="{NAMESPACE}"'
    assert monitored.query(f'absent(up{{{ns}, job="{SERVING}"}} == 1)') == []
    assert monitored.query(f'absent(up{{{ns}, job="{SCHEDULER}"}} == 1)') == []
    # A rule evaluated before the first scrape may still be pending; once the targets are up,
    # every rule must settle to inactive within a few evaluation intervals (1 s here).
    deadline = time.monotonic() + 15
    while True:
        body = httpx.get(f"{monitored.prometheus}/api/v1/rules", timeout=10).json()
        firing = [r["name"] for g in body["data"]["groups"] for r in g["rules"] if r["state"] != "inactive"]
        if not firing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert firing == []


# ------------------------------------------------------------------ the dashboard

METRIC_NAME = re.compile(r"\b(purchase_classifier_serve_\w+|dask_\w+)\b")


DASHBOARD_TARGETS = [(panel["title"], target["expr"]) for panel in PANELS for target in panel["targets"]]


def test_every_dashboard_query_parses_uses_scraped_metrics_and_each_panel_shows_data(
    monitored: Monitored, traffic: dict[str, Any]
) -> None:
    monitored.eventually(f'sum(purchase_classifier_serve_requests_total{{namespace="{NAMESPACE}", status="415"}})', 1)
    names = set(httpx.get(f"{monitored.prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
    for title, expr in DASHBOARD_TARGETS:
        referenced = set(METRIC_NAME.findall(expr))
        assert referenced, f"{title}: no metric of the service or of Dask in {expr}"
        assert referenced <= names, f"{title}: {sorted(referenced - names)} are not scraped"
    deadline = time.monotonic() + 60
    while True:
        panels_with_data: dict[str, bool] = {}
        for title, expr in DASHBOARD_TARGETS:
            result = monitored.query(as_prometheus_query(expr))  # a parse error fails here
            panels_with_data[title] = panels_with_data.get(title, False) or bool(result)
        empty = [title for title, shown in panels_with_data.items() if not shown]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert empty == []


# ------------------------------------------------------------------ drift (last: it adds traffic)


def test_drift_alerts_watch_latest_and_the_candidate_on_unfamiliar_traffic(
    monitored: Monitored, traffic: dict[str, Any]
) -> None:
    """Records unlike anything in training make both versions unsure: their drift alerts go pending.

    Runs after the tests above (pytest keeps a module's order), which count the first traffic exactly.
    """
    unfamiliar = [
        {
            "id": f"odd-{i}",
            "description": f"QXZ {i} VRRK PLOM {i * 7}",
            "cost": 100_000.0 + i,  # far above any training price: the log-cost feature is unfamiliar too
            "contract": "",
            "department": "",
        }
        for i in range(400)
    ]
    with monitored.server.client() as client:
        for start in range(0, len(unfamiliar), 20):
            response = client.post("/v1/classify", json={"records": unfamiliar[start : start + 20]})
            assert response.status_code == 200, response.text
    expected = {
        (name, version)
        for name in ("ModelConfidenceDrift", "ModelReviewShareDrift")
        for version in (monitored.latest, monitored.candidate)
    }
    deadline = time.monotonic() + 60
    while True:
        body = httpx.get(f"{monitored.prometheus}/api/v1/alerts", timeout=10).json()
        pending = {
            (a["labels"]["alertname"], a["labels"].get("model_version"))
            for a in body["data"]["alerts"]
            if a["state"] == "pending"
        }
        if expected <= pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pending == expected
