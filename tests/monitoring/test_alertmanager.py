"""Alerts reach a person: the project's rules, fired by a real Prometheus, routed by a real Alertmanager.

Debian's ``prometheus`` evaluates the PrometheusRule's rules (:func:`infra.k8s.monitoring.rule_groups`)
against a scrape target on 127.0.0.1 whose series make two alerts true: ``ServingModelNotReady``
(critical) and ``CronJobFailed`` (warning). It sends them to Debian's ``prometheus-alertmanager``
running the configuration the program renders (:func:`infra.k8s.prometheus_stack.alertmanager_config`)
from a typed ``alerting`` config with one receiver of each type. Every receiver's URL points at one
HTTP server in the test, so what arrives, where, is what a pager, a Slack channel and a webhook
would get. ``amtool check-config`` accepts the rendered configuration.

The one liberty taken: ``ServingModelNotReady``'s ``for: 10m`` is cut to 0 s (promtool's unit tests,
``tests/monitoring/promtool``, cover the durations); every other rule runs as the stack ships it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import Monitoring
from infra.k8s.common import SERVING
from infra.k8s.monitoring import rule_groups
from infra.k8s.prometheus_stack import alertmanager_config
from infra.schema.alerting import Alerting
from tests.monitoring.engines import (
    alertmanager_binary,
    amtool_binary,
    start_logged,
    start_prometheus,
    wait_until_ready,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

NAMESPACE = "purchase-classifier"
FAST_RULE = "ServingModelNotReady"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
EXPOSITION = """\
# TYPE purchase_classifier_serve_model_ready gauge
purchase_classifier_serve_model_ready{pod="serving-0"} 0
# TYPE kube_job_failed gauge
kube_job_failed{job_name="train-29000000",condition="true"} 1
# TYPE kube_job_owner gauge
kube_job_owner{job_name="train-29000000",owner_kind="CronJob",owner_name="train",owner_is_controller="true"} 1
"""
"""A serving pod without a model, and a failed run of the train CronJob (kube-state-metrics' series)."""


@dataclass
class Endpoint:
    """One HTTP server: ``/metrics`` for Prometheus, and every POST recorded by path."""

    url: str
    received: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return list(self.received.get(path, []))


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    port = free_port()
    state = Endpoint(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = EXPOSITION.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.received.setdefault(self.path, []).append(payload)
            self.send_response(202 if self.path == "/pagerduty" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def alerting(endpoint: str) -> Alerting:
    """A pager for critical alerts, the team channel for critical and warning, an audit hook for warnings."""
    return Alerting.model_validate(
        {
            "receivers": [
                {
                    "name": "pager",
                    "type": "pagerduty",
                    "severities": ["critical"],
                    "routingKey": ROUTING_KEY,
                    "url": f"{endpoint}/pagerduty",
                },
                {
                    "name": "team",
                    "type": "slack",
                    "severities": ["critical", "warning"],
                    "url": f"{endpoint}/slack",
                    "channel": "#ml-alerts",
                },
                {"name": "audit", "type": "webhook", "severities": ["warning"], "url": f"{endpoint}/webhook"},
            ],
            "groupWait": "1s",
            "groupInterval": "1s",
        }
    )


def amtool_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [amtool_binary(), "check-config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )


def test_amtool_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    for name, config in {"none": Alerting(), "three": alerting("https://hooks.example.invalid")}.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(alertmanager_config(config)))
        result = amtool_check(path)
        assert result.returncode == 0, result.stdout + result.stderr
        receivers = 1 if name == "none" else 4  # null, plus one per configured receiver
        assert f"{receivers} receivers" in result.stdout


def _names(alerts: list[dict[str, Any]]) -> set[str]:
    return {alert["labels"]["alertname"] for alert in alerts}


def test_a_firing_rule_reaches_the_receivers_its_severity_routes_to(tmp_path: Path, endpoint: Endpoint) -> None:
    groups = rule_groups(NAMESPACE, Monitoring(), "https://example.invalid/runbook.md")
    for rule in groups[0]["rules"]:
        if rule["alert"] == FAST_RULE:
            rule["for"] = "0s"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    am_config = tmp_path / "alertmanager.yaml"
    am_config.write_text(yaml.safe_dump(alertmanager_config(alerting(endpoint.url))))
    assert amtool_check(am_config).returncode == 0

    am_port = free_port()
    (tmp_path / "prometheus.yaml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": ["rules.yaml"],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                "scrape_configs": [
                    {
                        "job_name": SERVING,
                        "static_configs": [
                            {"targets": [endpoint.url.removeprefix("http://")], "labels": {"namespace": NAMESPACE}}
                        ],
                    }
                ],
            }
        )
    )
    running: list[subprocess.Popen[bytes]] = []
    try:
        am_log = tmp_path / "alertmanager.log"
        alertmanager = start_logged(
            [
                alertmanager_binary(),
                f"--config.file={am_config}",
                f"--storage.path={tmp_path / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # one instance: no gossip port on every interface
            ],
            am_log,
            running,
        )
        wait_until_ready(f"http://127.0.0.1:{am_port}/-/ready", alertmanager, am_log)
        start_prometheus(
            tmp_path / "prometheus.yaml", tmp_path / "prometheus-data", tmp_path / "prometheus.log", running
        )

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if endpoint.bodies("/pagerduty") and endpoint.bodies("/webhook") and len(endpoint.bodies("/slack")) >= 2:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not every receiver was reached: {endpoint.received}\n{am_log.read_text()[-3000:]}")
        time.sleep(3)  # a wrong route would have delivered by now too (group_wait and group_interval are 1 s)
    finally:
        for process in reversed(running):
            process.terminate()
            process.wait(15)

    # Critical: the pager (PagerDuty Events v2) and the team channel; never the warnings-only hook.
    pages = endpoint.bodies("/pagerduty")
    assert {page["routing_key"] for page in pages} == {ROUTING_KEY}
    assert {page["event_action"] for page in pages} == {"trigger"}
    assert all(page["payload"]["summary"].startswith(f"{FAST_RULE}: ") for page in pages)
    assert pages[0]["links"] == [{"href": f"https://example.invalid/runbook.md#{FAST_RULE.lower()}", "text": "runbook"}]
    # Warning: the team channel and the audit webhook; never the pager.
    hooks = endpoint.bodies("/webhook")
    assert {hook["receiver"] for hook in hooks} == {"audit"}
    assert set().union(*(_names(hook["alerts"]) for hook in hooks)) == {"CronJobFailed"}
    assert {hook["commonLabels"]["severity"] for hook in hooks} == {"warning"}
    # The team channel hears of both, each message naming the alert and linking its runbook.
    texts = [attachment["text"] for message in endpoint.bodies("/slack") for attachment in message["attachments"]]
    assert {message["channel"] for message in endpoint.bodies("/slack")} == {"#ml-alerts"}
    for alert in (FAST_RULE, "CronJobFailed"):
        assert any(f"*{alert}*" in text and f"runbook.md#{alert.lower()}" in text for text in texts), texts
