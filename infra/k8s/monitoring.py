"""Monitoring as code: Prometheus Operator monitors, the alert rules and the Grafana dashboard.

The serving pods and the Dask scheduler are scraped through their Services (ServiceMonitor, so the
``job`` label is the Service name), the Dask workers, which have no Service, through a PodMonitor.
Every alert is scoped to the stack's namespace, so one Prometheus can watch several stacks, and
links a section of ``docs/runbook.md`` (``runbook_url``). The rules are pure data built here and
tested for real with ``promtool``; the dashboard JSON lives in ``infra/dashboards/``.

All of it is optional per stack (``workloads.monitoring.enabled``): the ``monitoring.coreos.com``
kinds only exist where the Prometheus Operator runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import (
    JOBS,
    SCHEDULER,
    SERVING,
    WORKER,
    Context,
    Obj,
    metadata,
    selector_labels,
)
from infra.naming import DASHBOARD_LABEL
from infra.schema import Monitoring

MONITORING_API = "monitoring.coreos.com/v1"
METRICS_PATH = "/metrics"
SCRAPE_INTERVAL = "30s"
RULE_NAME = "purchase-classifier-alerts"
DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboards"
DASHBOARD_FILE = "purchase-classifier.json"

SERVE = "purchase_classifier_serve"
"""Prefix of the service's metrics (``ml/serve/metrics.py``)."""
PREDICTION_ROUTES = "/v1/classify|/v2/models/.+/infer"
"""Route templates that run the model: the latency SLO is about these, not health checks."""
DRIFT_WINDOW = "1h"
DRIFT_MIN_PREDICTIONS = 200
"""Fewer predictions than this in the drift window say too little about a version to page anyone."""
MISSED_SCHEDULE_GRACE_SECONDS = 3600
"""How long past its due time a CronJob run may be before it counts as missed: longer than the stacks'
``startingDeadlineSeconds`` (5 to 15 minutes), so by then Kubernetes has given up on that run."""


def _metadata(ctx: Context, name: str, component: str) -> Obj:
    meta = metadata(ctx, name, component)
    meta["labels"] |= ctx.workloads.monitoring.selector_labels
    return meta


def _service_monitor(ctx: Context, component: str, port: str) -> Obj:
    return {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": _metadata(ctx, component, component),
        "spec": {
            "selector": {"matchLabels": selector_labels(ctx, component)},
            "namespaceSelector": {"matchNames": [ctx.namespace]},
            "endpoints": [{"port": port, "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}],
        },
    }


def build_service_monitors(ctx: Context) -> list[Obj]:
    """The serving pods and the Dask scheduler, through their Services' named ports."""
    return [_service_monitor(ctx, SERVING, "http"), _service_monitor(ctx, SCHEDULER, "http-dashboard")]


def build_worker_pod_monitor(ctx: Context) -> Obj:
    """The Dask workers' own metrics (memory, transfers, tasks) on their dashboard port."""
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": _metadata(ctx, WORKER, WORKER),
        "spec": {
            "selector": {"matchLabels": selector_labels(ctx, WORKER)},
            "namespaceSelector": {"matchNames": [ctx.namespace]},
            "podMetricsEndpoints": [{"port": "http-dashboard", "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}],
        },
    }


# --------------------------------------------------------------------------- alert rules


@dataclass(frozen=True)
class Alert:
    """One alerting rule; its runbook section is ``## <name>`` in ``docs/runbook.md``."""

    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_: str = "0m"

    @property
    def anchor(self) -> str:
        """The section's anchor as Markdown renderers make it from the heading (lower case)."""
        return self.name.lower()


def alerts(namespace: str, mon: Monitoring) -> list[Alert]:
    """Every alert of a stack, its thresholds from the stack's monitoring config."""
    ns = f'namespace="{namespace}"'
    live_count = f"sum by (model_version) (rate({SERVE}_confidence_count{{{ns}}}[{DRIFT_WINDOW}]))"
    enough_traffic = (
        f"sum by (model_version) (increase({SERVE}_confidence_count{{{ns}}}[{DRIFT_WINDOW}])) "
        f">= {DRIFT_MIN_PREDICTIONS}"
    )
    jobs = "|".join(JOBS)
    predictions = f"{SERVE}_predictions_total{{{ns}}}"
    return [
        Alert(
            "ServingDown",
            f'absent(up{{{ns}, job="{SERVING}"}} == 1)',
            "critical",
            "No serving pod is up",
            "Prometheus has no serving target that is up: the pods are gone, crash-looping, or their "
            "metrics port is unreachable.",
            "5m",
        ),
        Alert(
            "ServingHighErrorRatio",
            f'sum(rate({SERVE}_requests_total{{{ns}, status=~"5.."}}[5m]))\n'
            f"  / sum(rate({SERVE}_requests_total{{{ns}}}[5m]))\n> {mon.error_ratio}",
            "critical",
            "Serving answers {{ $value | humanizePercentage }} of requests with a 5xx",
            f"More than {mon.error_ratio:.2%} of the service's requests failed with a 5xx over 5 minutes.",
            "5m",
        ),
        Alert(
            "ServingLatencyHigh",
            f"histogram_quantile(0.99,\n  sum by (le) (rate({SERVE}_request_duration_seconds_bucket"
            f'{{{ns}, route=~"{PREDICTION_ROUTES}"}}[5m]))\n) > {mon.latency_p99_seconds}',
            "warning",
            "Serving p99 latency is {{ $value | humanizeDuration }}",
            f"The p99 latency of the prediction routes is above the {mon.latency_p99_seconds} s SLO.",
            "10m",
        ),
        Alert(
            "ServingModelNotReady",
            f"{SERVE}_model_ready{{{ns}}} == 0",
            "critical",
            "Serving pod {{ $labels.pod }} has no model loaded",
            "The pod has no verified model: it answers 503 and is out of its Service's endpoints.",
            "10m",
        ),
        Alert(
            "ServingModelReloadFailing",
            f'increase({SERVE}_model_reloads_total{{{ns}, result="failure"}}[15m]) > 0',
            "warning",
            "Serving pod {{ $labels.pod }} failed to load a model version",
            "A model load failed in the last 15 minutes (store unreachable, or a version refused); "
            "the pod keeps serving the version it had.",
        ),
        Alert(
            "ModelConfidenceDrift",
            f"(\n  sum by (model_version) (rate({SERVE}_confidence_sum{{{ns}}}[{DRIFT_WINDOW}]))\n"
            f"  / {live_count}\n)\n< on (model_version) (\n"
            f"  max by (model_version) ({SERVE}_reference_mean_confidence{{{ns}}}) - {mon.confidence_drift}\n)\n"
            f"and on (model_version) {enough_traffic}",
            "warning",
            "Model {{ $labels.model_version }} is less confident on live traffic than on validation",
            f'The version\'s mean confidence over {DRIFT_WINDOW} ({{{{ $value | printf "%.3f" }}}}) is more '
            f"than {mon.confidence_drift} below its validation-time mean: the inputs have drifted.",
            "30m",
        ),
        Alert(
            "ModelReviewShareDrift",
            f"(\n  sum by (model_version) (rate({SERVE}_review_flagged_total{{{ns}}}[{DRIFT_WINDOW}]))\n"
            f"  / {live_count}\n)\n> on (model_version) (\n"
            f"  max by (model_version) ({SERVE}_reference_review_share{{{ns}}}) + {mon.review_share_drift}\n)\n"
            f"and on (model_version) {enough_traffic}",
            "warning",
            "Model {{ $labels.model_version }} flags {{ $value | humanizePercentage }} of live records for review",
            f"The version's share of predictions under the review threshold over {DRIFT_WINDOW} is more than "
            f"{mon.review_share_drift} above its validation-time share: experts get more work than planned.",
            "30m",
        ),
        Alert(
            "CandidateShadowErrors",
            f"sum by (model_version) (\n"
            f'  increase({SERVE}_shadow_comparisons_total{{{ns}, result="error"}}[15m])\n) > 0',
            "warning",
            "Candidate {{ $labels.model_version }} fails on live traffic in shadow mode",
            "The candidate's shadow calls failed in the last 15 minutes; LATEST's answers were unaffected, "
            "but the candidate must not be promoted.",
        ),
        Alert(
            "ServingPredictionsStopped",
            f"(sum(increase({predictions}[30m])) or vector(0)) == 0\n"
            f"and on () sum(increase({predictions}[30m] offset 1d)) > 0",
            "warning",
            "Serving made no prediction in 30 minutes",
            "The service predicted nothing for 30 minutes although it did at the same time yesterday: "
            "the application stopped calling it, or its calls no longer reach it.",
            "15m",
        ),
        Alert(
            "CronJobFailed",
            f'max by (owner_name) (\n  (kube_job_failed{{{ns}, condition="true"}} == 1)\n'
            f"  * on (namespace, job_name) group_left (owner_name)\n"
            f'  kube_job_owner{{{ns}, owner_kind="CronJob", owner_name=~"{jobs}"}}\n) > 0',
            "warning",
            "A run of CronJob {{ $labels.owner_name }} failed",
            "A Job of the CronJob failed after its retries; its pods' logs say why.",
        ),
        Alert(
            "CronJobMissedSchedule",
            f'time() - kube_cronjob_next_schedule_time{{{ns}, cronjob=~"{jobs}"}} > {MISSED_SCHEDULE_GRACE_SECONDS}\n'
            f"and on (namespace, cronjob) kube_cronjob_spec_suspend{{{ns}}} == 0",
            "warning",
            "CronJob {{ $labels.cronjob }} missed its schedule",
            f"The CronJob's next run was due over {MISSED_SCHEDULE_GRACE_SECONDS // 60} minutes ago and has "
            "not started (a previous run still active, or the controller could not create the Job).",
        ),
        Alert(
            "DaskSchedulerDown",
            f'absent(up{{{ns}, job="{SCHEDULER}"}} == 1)',
            "critical",
            "The Dask scheduler is not up",
            "The scheduler is down or its dashboard port is unreachable: train and predict jobs cannot run.",
            "10m",
        ),
        Alert(
            "DaskWorkersMissing",
            f'sum(dask_scheduler_workers{{{ns}}})\n< sum(kube_deployment_spec_replicas{{{ns}, deployment="{WORKER}"}})',
            "warning",
            "The Dask scheduler sees {{ $value }} workers, fewer than the Deployment asks for",
            "Worker pods are pending, crash-looping or cannot reach the scheduler.",
            "15m",
        ),
    ]


def rule_groups(namespace: str, mon: Monitoring, runbook_url: str) -> list[Obj]:
    """The rules in Prometheus's rule-file shape (``groups``), as promtool and the operator take them."""
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity, "namespace": namespace},
            "annotations": {
                "summary": a.summary,
                "description": a.description,
                "runbook_url": f"{runbook_url}#{a.anchor}",
            },
        }
        for a in alerts(namespace, mon)
    ]
    return [{"name": "purchase-classifier", "rules": rules}]


def build_prometheus_rule(ctx: Context) -> Obj:
    mon = ctx.workloads.monitoring
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": _metadata(ctx, RULE_NAME, SERVING),
        "spec": {"groups": rule_groups(ctx.namespace, mon, mon.runbook_url)},
    }


# --------------------------------------------------------------------------- dashboard


def dashboard_json() -> str:
    return (DASHBOARD_DIR / DASHBOARD_FILE).read_text()


def build_dashboard_configmap(ctx: Context) -> Obj:
    """The dashboard in Grafana's namespace, labelled for its sidecar to load."""
    meta = metadata(ctx, f"{ctx.namespace}-dashboard", SERVING)
    meta["namespace"] = ctx.workloads.monitoring.namespace
    meta["labels"] |= DASHBOARD_LABEL
    dashboard = json.loads(dashboard_json())  # refuse a broken file before it reaches Grafana
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {DASHBOARD_FILE: json.dumps(dashboard, indent=1, sort_keys=True)},
    }


def _nth_service_monitor(index: int, ctx: Context) -> Obj:
    return build_service_monitors(ctx)[index]


class MonitoringObjects(pulumi.ComponentResource):
    """The ServiceMonitors, PodMonitor, PrometheusRule and dashboard ConfigMap of a stack.

    :param after: what every object waits for: its namespace, and the operator release that defines
        the kinds (:class:`~infra.k8s.prometheus_stack.PrometheusStack`) where the program installs it.
    """

    def __init__(
        self,
        name: str,
        ctx: pulumi.Output[Context],
        after: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:k8s:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=after)
        custom_objects: tuple[tuple[str, str, Callable[[Context], Obj]], ...] = (
            (SERVING, "ServiceMonitor", partial(_nth_service_monitor, 0)),
            (SCHEDULER, "ServiceMonitor", partial(_nth_service_monitor, 1)),
            (WORKER, "PodMonitor", build_worker_pod_monitor),
            ("alerts", "PrometheusRule", build_prometheus_rule),
        )
        for suffix, kind, build in custom_objects:
            obj = ctx.apply(build)
            k8s.apiextensions.CustomResource(
                f"{name}-{suffix}",
                api_version=MONITORING_API,
                kind=kind,
                metadata=obj["metadata"],
                spec=obj["spec"],
                opts=child,
            )
        dashboard = ctx.apply(build_dashboard_configmap)
        k8s.core.v1.ConfigMap(f"{name}-dashboard", metadata=dashboard["metadata"], data=dashboard["data"], opts=child)
        self.register_outputs({})
