"""The Prometheus Operator stack: installed before the monitoring objects on a cluster the program
creates, wired so its Prometheus and Grafana pick up what the program declares, and refused where it
makes no sense."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra.catalog import PROMETHEUS_STACK_RELEASE
from infra.checks.capacity import capacity_report
from infra.config import ConfigError, parse_config
from infra.k8s import prometheus_stack
from infra.mockrun import load_stack_config, to_pulumi_config
from infra.quantity import cpu_millicores, memory_bytes
from infra.schema import Resources
from tests.infra.harness import AWS_STACKS, DIGEST, STACKS, CapturedResource, StackRun, cached_run, run_stack

RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
MONITORING_GROUP = "kubernetes:monitoring.coreos.com/"
WORKLOADS = "purchase-classifier:workloads"


def _chart(resource: CapturedResource) -> str:
    return str(resource.inputs["chart"]).rsplit("/", 1)[-1]


def releases(run: StackRun, chart: str) -> list[CapturedResource]:
    return [r for r in run.of_type(RELEASE) if _chart(r) == chart]


def monitoring_objects(run: StackRun) -> list[CapturedResource]:
    """The custom resources of the operator's kinds and the dashboard ConfigMap."""
    return [
        r
        for r in run.resources
        if r.type.startswith(MONITORING_GROUP) or (r.type == "kubernetes:core/v1:ConfigMap" and "dashboard" in r.name)
    ]


def stack_monitoring(stack: str) -> dict[str, Any]:
    return dict(load_stack_config(stack)[WORKLOADS]["monitoring"])


def with_monitoring(stack: str, **changes: Any) -> dict[str, Any]:
    workloads = copy.deepcopy(load_stack_config(stack)[WORKLOADS])
    workloads["monitoring"] |= changes
    return workloads


# ------------------------------------------------------------------ the program


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_release_is_pinned_in_the_monitoring_namespace(stack: str) -> None:
    run = cached_run(stack)
    namespace = stack_monitoring(stack)["namespace"]
    (release,) = releases(run, "kube-prometheus-stack")
    (crds,) = releases(run, prometheus_stack.CRD_RELEASE)
    assert release.inputs["name"] == PROMETHEUS_STACK_RELEASE
    assert release.inputs["version"] == prometheus_stack.CHART_VERSION
    assert crds.inputs["version"] == prometheus_stack.CRD_CHART_VERSION
    assert release.inputs["namespace"] == crds.inputs["namespace"] == namespace
    # The CRDs come from their own release (which upgrades them), installed first.
    assert release.inputs["skipCrds"] is True and release.inputs["values"]["crds"] == {"enabled": False}
    assert crds.urn in release.dependencies
    (ns,) = [r for r in run.of_type(NAMESPACE) if r.inputs["metadata"]["name"] == namespace]
    assert ns.urn in release.dependencies and ns.urn in crds.dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_monitoring_objects_on_a_created_cluster_wait_for_the_operator(stack: str) -> None:
    """Fails when a stack that creates its cluster declares monitoring objects without installing the
    operator first: the first `pulumi up` would stop on kinds the API server does not know."""
    run = cached_run(stack)
    objects = monitoring_objects(run)
    creates_cluster = bool(run.of_type("aws:eks/cluster:Cluster"))
    if not creates_cluster:
        assert releases(run, "kube-prometheus-stack") == []
        return
    assert objects, f"{stack}: monitoring is enabled in the stack file but nothing was declared"
    (release,) = releases(run, "kube-prometheus-stack")
    for obj in objects:
        assert release.urn in obj.dependencies, f"{obj.name} does not wait for {PROMETHEUS_STACK_RELEASE}"


def test_without_install_there_is_no_release_and_nothing_waits_for_one() -> None:
    """An operator another program installs (install: false): the objects are declared alone."""
    workloads = with_monitoring("dev", install=False)
    run = run_stack("dev", overrides={"imageDigest": DIGEST, WORKLOADS: workloads})
    assert releases(run, "kube-prometheus-stack") == [] == releases(run, prometheus_stack.CRD_RELEASE)
    assert len(monitoring_objects(run)) == 5
    assert not [r for r in run.of_type(NAMESPACE) if r.inputs["metadata"]["name"] == "monitoring"]


def test_the_operator_is_installed_before_any_image_exists() -> None:
    """Platform, not workload: a fresh stack without a digest still gets the operator."""
    run = cached_run("dev", with_digest=False)
    assert monitoring_objects(run) == []
    assert len(releases(run, "kube-prometheus-stack")) == 1


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_prometheus_selects_the_programs_monitors_and_rules(stack: str) -> None:
    run = cached_run(stack)
    (release,) = releases(run, "kube-prometheus-stack")
    spec = release.inputs["values"]["prometheus"]["prometheusSpec"]
    kinds = {"ServiceMonitor": "serviceMonitor", "PodMonitor": "podMonitor", "PrometheusRule": "rule"}
    for obj in monitoring_objects(run):
        kind = obj.type.rsplit(":", 1)[-1]
        if kind not in kinds:
            continue
        selector = spec[f"{kinds[kind]}Selector"]["matchLabels"]
        assert selector.items() <= obj.inputs["metadata"]["labels"].items(), f"{obj.name} is not selected"
        # {} selects every namespace; the objects live in the workloads', not Prometheus's.
        assert spec[f"{kinds[kind]}NamespaceSelector"] == {}
        assert obj.inputs["metadata"]["namespace"] != release.inputs["namespace"]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_grafana_sidecar_loads_the_dashboard_configmap(stack: str) -> None:
    run = cached_run(stack)
    (release,) = releases(run, "kube-prometheus-stack")
    grafana = release.inputs["values"]["grafana"]
    dashboards = grafana["sidecar"]["dashboards"]
    (configmap,) = [r for r in monitoring_objects(run) if r.type == "kubernetes:core/v1:ConfigMap"]
    meta = configmap.inputs["metadata"]
    assert dashboards["enabled"] is True
    assert meta["labels"][dashboards["label"]] == dashboards["labelValue"]
    # The sidecar watches Grafana's own namespace unless told otherwise.
    assert "searchNamespace" not in dashboards and meta["namespace"] == release.inputs["namespace"]
    assert grafana["adminPassword"] == "", "the chart's well-known default password must not be used"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_components_the_alerts_need_run_and_node_exporter_does_not(stack: str) -> None:
    values = releases(cached_run(stack), "kube-prometheus-stack")[0].inputs["values"]
    assert values["kubeStateMetrics"] == {"enabled": True}  # CronJob and Dask worker alerts
    assert values["nodeExporter"] == {"enabled": False}  # would need the privileged Pod Security level
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[component] == {"enabled": False}, f"EKS does not let Prometheus reach {component}"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_pod_has_requests_and_limits_and_runs_on_the_general_pool(stack: str) -> None:
    run = cached_run(stack)
    values = releases(run, "kube-prometheus-stack")[0].inputs["values"]
    pods = {
        "operator": values["prometheusOperator"],
        "webhook job": values["prometheusOperator"]["admissionWebhooks"]["patch"],
        "prometheus": values["prometheus"]["prometheusSpec"],
        "alertmanager": values["alertmanager"]["alertmanagerSpec"],
        "kube-state-metrics": values["kube-state-metrics"],
        "grafana": values["grafana"],
    }
    (general,) = [p for p in run.of_type(NODE_POOL) if p.inputs["metadata"]["name"] == prometheus_stack.GENERAL_POOL]
    general_labels = general.inputs["spec"]["template"]["metadata"]["labels"]
    for name, pod in pods.items():
        assert set(pod["resources"]) == {"requests", "limits"}, name
        assert pod["nodeSelector"].items() <= general_labels.items(), f"{name} selects no node of the general pool"
    assert set(values["grafana"]["sidecar"]["resources"]) == {"requests", "limits"}
    # Karpenter must be able to launch that node before Helm waits for the pods.
    (release,) = releases(run, "kube-prometheus-stack")
    assert general.urn in release.dependencies


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_monitoring_namespace_enforces_baseline_not_privileged(stack: str) -> None:
    run = cached_run(stack)
    namespace = stack_monitoring(stack)["namespace"]
    (ns,) = [r for r in run.of_type(NAMESPACE) if r.inputs["metadata"]["name"] == namespace]
    labels = ns.inputs["metadata"]["labels"]
    version = f"v{load_stack_config(stack)['purchase-classifier:cluster']['version']}"
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert {labels[f"pod-security.kubernetes.io/{m}-version"] for m in ("enforce", "audit", "warn")} == {version}


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_network_policies_admit_the_namespace_prometheus_runs_in(stack: str) -> None:
    run = cached_run(stack)
    namespace = releases(run, "kube-prometheus-stack")[0].inputs["namespace"]
    admitted = {
        peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
        for policy in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        for rule in policy.inputs["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer
    }
    assert namespace in admitted


# ------------------------------------------------------------------ config


def _parse(stack: str, **changes: Any) -> None:
    raw = load_stack_config(stack)
    raw[WORKLOADS] = with_monitoring(stack, **changes)
    config, secret_keys = to_pulumi_config(raw, {"databaseUrl": "postgresql+psycopg://u:p@db/x"})
    parse_config(config, secret_keys=secret_keys, stack=stack, aws_region=raw.get("aws:region"))


@pytest.mark.parametrize(
    ("stack", "changes", "message"),
    [
        (
            "local",
            {"enabled": True, "install": True, "selectorLabels": {"release": PROMETHEUS_STACK_RELEASE}},
            "install is only used when cluster.mode is 'eks'",
        ),
        ("dev", {"enabled": False, "install": True}, "install is true but enabled is false"),
        (
            "dev",
            {"selectorLabels": {"team": "ml"}},
            "the installed Prometheus selects `release: kube-prometheus-stack`",
        ),
        ("dev", {"selectorLabels": {}}, "set selectorLabels to include it"),
    ],
    ids=["existing-mode", "install-without-objects", "foreign-selector", "no-selector"],
)
def test_install_that_makes_no_sense_is_refused(stack: str, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(stack, **changes)
    assert message in str(info.value)
    assert "workloads.monitoring" in str(info.value)


def test_install_defaults_off_and_extra_selector_labels_are_allowed() -> None:
    _parse("local")  # existing mode: the default, install false
    _parse("dev", selectorLabels={"release": PROMETHEUS_STACK_RELEASE, "team": "ml"})


def test_capacity_check_counts_the_stack_on_the_general_pool() -> None:
    """The general pool must hold Prometheus and the rest beside the workloads: the config-time
    capacity check adds exactly their requests when install is on."""

    def general_max(install: bool) -> tuple[int, int]:
        raw = load_stack_config("dev")
        raw[WORKLOADS] = with_monitoring("dev", install=install)
        config, secret_keys = to_pulumi_config(raw, {"databaseUrl": "postgresql+psycopg://u:p@db/x"})
        cfg = parse_config(config, secret_keys=secret_keys, stack="dev", aws_region=raw.get("aws:region"))
        (general,) = [row for row in capacity_report(cfg) if row.pool == "general"]
        return general.requested_max

    with_stack, without = general_max(True), general_max(False)
    requests = [Resources.model_validate(r).requests for r in prometheus_stack.RESOURCES.values()]
    assert with_stack[0] - without[0] == sum(cpu_millicores(q.cpu) for q in requests)
    assert with_stack[1] - without[1] == sum(memory_bytes(q.memory) for q in requests)
