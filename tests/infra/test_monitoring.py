"""The monitoring objects: valid for the Prometheus Operator's CRDs, aimed at what really serves
metrics, admitted by the NetworkPolicies, and declared by the program only where enabled."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from infra.config import Monitoring
from infra.k8s import dask, monitoring, serving
from infra.k8s.common import SCHEDULER_DASHBOARD_PORT, SERVING_PORT, WORKER_DASHBOARD_PORT, Context
from infra.render import kubernetes_manifests
from tests.infra.harness import STACKS, cached_run
from tests.infra.test_k8s_builders import make_ctx
from tests.monitoring.crds import validate_custom_resource

ENABLED = {"dev": True, "staging": True, "prod": True, "local": False}
"""What the stack files choose (the local control plane has no operator CRDs)."""


def with_monitoring(ctx: Context, **values: Any) -> Context:
    mon = ctx.workloads.monitoring.model_copy(update={"enabled": True, **values})
    return dataclasses.replace(ctx, workloads=ctx.workloads.model_copy(update={"monitoring": mon}))


def custom_resources(ctx: Context) -> list[dict[str, Any]]:
    return [
        *monitoring.build_service_monitors(ctx),
        monitoring.build_worker_pod_monitor(ctx),
        monitoring.build_prometheus_rule(ctx),
    ]


# ------------------------------------------------------------------ CRD schemas


@pytest.mark.parametrize("stack", STACKS)
def test_every_custom_resource_is_valid_for_the_operator_crds(stack: str) -> None:
    for obj in custom_resources(with_monitoring(make_ctx(stack))):
        validate_custom_resource(obj)


def test_crd_validation_refuses_unknown_fields_and_bad_values() -> None:
    monitor = monitoring.build_service_monitors(with_monitoring(make_ctx()))[0]
    typo = copy.deepcopy(monitor)
    typo["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(AssertionError, match="intervall"):
        validate_custom_resource(typo)
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(AssertionError, match="interval"):
        validate_custom_resource(bad_interval)
    rule = monitoring.build_prometheus_rule(with_monitoring(make_ctx()))
    rule["spec"]["groups"][0]["rules"][0].pop("expr")
    with pytest.raises(AssertionError, match="'expr' is a required property"):
        validate_custom_resource(rule)


# ------------------------------------------------------------------ aimed at the right targets


def test_service_monitors_select_the_services_and_their_metrics_ports() -> None:
    ctx = with_monitoring(make_ctx())
    services = {"serving": serving.build_service(ctx), "dask-scheduler": dask.build_scheduler_service(ctx)}
    for monitor in monitoring.build_service_monitors(ctx):
        service = services[monitor["metadata"]["name"]]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [ctx.namespace]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"


def test_pod_monitor_selects_the_worker_pods_and_their_dashboard_port() -> None:
    ctx = with_monitoring(make_ctx())
    pod_monitor = monitoring.build_worker_pod_monitor(ctx)
    template = dask.build_worker_deployment(ctx)["spec"]["template"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == WORKER_DASHBOARD_PORT


def test_selector_labels_reach_every_monitor_and_the_rule() -> None:
    ctx = with_monitoring(make_ctx(), selector_labels={"release": "kps"})
    for obj in custom_resources(ctx):
        assert obj["metadata"]["labels"]["release"] == "kps"


def test_the_rule_carries_the_stack_thresholds() -> None:
    ctx = with_monitoring(make_ctx(), error_ratio=0.02, latency_p99_seconds=0.4, runbook_url="https://x/runbook")
    rule = monitoring.build_prometheus_rule(ctx)
    assert rule["spec"]["groups"] == monitoring.rule_groups(
        ctx.namespace, ctx.workloads.monitoring, "https://x/runbook"
    )
    by_name = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert by_name["ServingHighErrorRatio"]["expr"].endswith("> 0.02")
    assert by_name["ServingLatencyHigh"]["expr"].endswith("> 0.4")


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar_in_its_namespace() -> None:
    ctx = with_monitoring(make_ctx(), namespace="observability")
    cm = monitoring.build_dashboard_configmap(ctx)
    assert cm["metadata"]["namespace"] == "observability"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    assert json.loads(text)["uid"] == "purchase-classifier"


# ------------------------------------------------------------------ NetworkPolicies


def ingress_from(policy: dict[str, Any], namespace: str) -> set[int]:
    """Ports a NetworkPolicy admits from ``namespace`` (by its ``kubernetes.io/metadata.name``)."""
    ports: set[int] = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            selector = peer.get("namespaceSelector", {})
            names = {selector.get("matchLabels", {}).get("kubernetes.io/metadata.name")}
            for expr in selector.get("matchExpressions", []):
                names |= set(expr["values"])
            if namespace in names:
                ports |= {p["port"] for p in rule["ports"]}
    return ports


@pytest.mark.parametrize("enabled", [True, False])
def test_network_policies_admit_prometheus_to_the_metrics_ports_only_when_enabled(enabled: bool) -> None:
    ctx = make_ctx()
    if enabled:
        ctx = with_monitoring(ctx, namespace="observability")
    else:
        ctx = dataclasses.replace(
            ctx,
            workloads=ctx.workloads.model_copy(update={"monitoring": Monitoring(namespace="observability")}),
        )
    policies = {p["metadata"]["name"]: p for p in dask.build_network_policies(ctx)}
    expected = {
        "serving": {SERVING_PORT},
        "dask-scheduler": {SCHEDULER_DASHBOARD_PORT},
        "dask-worker": {WORKER_DASHBOARD_PORT},
    }
    actual = {
        "serving": ingress_from(serving.build_network_policy(ctx), "observability"),
        "dask-scheduler": ingress_from(policies["dask-scheduler"], "observability"),
        "dask-worker": ingress_from(policies["dask-worker"], "observability"),
    }
    assert actual == (expected if enabled else {key: set() for key in expected})


# ------------------------------------------------------------------ the program


@pytest.mark.parametrize("stack", STACKS)
def test_the_program_declares_the_monitoring_objects_where_enabled(stack: str) -> None:
    manifests = kubernetes_manifests(cached_run(stack))
    kinds = sorted(o["kind"] for o in manifests if o["apiVersion"].startswith("monitoring.coreos.com/"))
    dashboards = [o for o in manifests if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]]
    if ENABLED[stack]:
        assert kinds == ["PodMonitor", "PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
        assert len(dashboards) == 1
        for obj in manifests:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                validate_custom_resource(obj)
    else:
        assert kinds == [] and dashboards == []
