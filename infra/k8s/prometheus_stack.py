"""The Prometheus Operator stack a cluster this program creates needs before its monitoring objects.

``workloads.monitoring.install`` (eks mode) installs two pinned Helm charts, the way the Karpenter
controller is installed (:mod:`infra.aws.karpenter`): ``prometheus-operator-crds`` (the
``monitoring.coreos.com`` CRDs as templates, so a chart upgrade upgrades them; Helm never upgrades a
chart's ``crds/`` directory) and ``kube-prometheus-stack`` without its own CRDs: the operator,
Prometheus, Alertmanager, kube-state-metrics (the CronJob and Dask alerts read its series) and Grafana
with its dashboard sidecar. The monitoring objects (:mod:`infra.k8s.monitoring`) depend on the release,
so their kinds exist before they are applied.

Alertmanager's configuration is rendered from ``purchase-classifier:alerting``
(:func:`alertmanager_config`): one receiver per configured destination, routed by the alerts'
``severity`` label, everything else (the chart's ``Watchdog`` heartbeat, alerts no receiver takes) to
``null``. The chart writes it into a Kubernetes Secret; with receivers the Helm values carry their URLs
and are a Pulumi secret.

What is left out, and why: node-exporter (host network, host PID and hostPath mounts, which only the
``privileged`` Pod Security level admits; no alert of ours reads node metrics), and the control-plane
scrapes (EKS runs the controller manager, scheduler and etcd out of reach, and kube-proxy serves its
metrics on the node's loopback): scraping what cannot be reached only fires ``TargetDown``.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.catalog import PROMETHEUS_STACK_RELEASE
from infra.catalog import PROMETHEUS_STACK_RESOURCES as RESOURCES
from infra.k8s.common import Obj, pod_security_labels
from infra.naming import DASHBOARD_LABEL, POOL_LABEL
from infra.schema import Monitoring
from infra.schema.alerting import NULL_RECEIVER, Alerting, Receiver

CHART_REPOSITORY = "oci://ghcr.io/prometheus-community/charts"
CHART_VERSION = "88.1.0"
CRD_CHART_VERSION = "31.0.0"
OPERATOR_VERSION = "v0.93.0"
"""The Prometheus Operator both charts above ship (kube-prometheus-stack 88.x, prometheus-operator-crds
31.0.x); the tests validate the monitoring objects against this version's CRDs. Bump the three together."""
CRD_RELEASE = "prometheus-operator-crds"
GENERAL_POOL = "general"
"""The Karpenter pool the stack runs on (system and Dask nodes are tainted for their own pods)."""
HELM_TIMEOUT_SECONDS = 900
"""A first install waits for Karpenter to launch a general node and for every pod to be ready."""
PSA_ENFORCE = "baseline"
"""Refuses host namespaces, hostPath and privileged pods; the chart's pods without node-exporter need
none of them, and ``restricted`` is audited and warned about, not enforced, because the chart does not
promise every container (e.g. its webhook certificate job) meets it."""
PSA_AUDIT = "restricted"

PROMETHEUS_RETENTION = "7d"
PROMETHEUS_RETENTION_SIZE = "8GB"
"""Prometheus keeps its data on the node (an ``emptyDir``): bounded well under a node's root volume.
A restarted Prometheus starts empty, so an alert comparing with yesterday stays quiet for a day."""


def build_namespace(namespace: str, kubernetes_version: str) -> Obj:
    """The monitoring namespace, its Pod Security levels pinned to the cluster's version."""
    labels = pod_security_labels(kubernetes_version, enforce=PSA_ENFORCE, audit=PSA_AUDIT)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}


SLACK_TEXT = (
    "{{ range .Alerts }}*{{ .Labels.alertname }}* ({{ .Labels.severity }}, {{ .Labels.namespace }}): "
    "{{ .Annotations.summary }}\n{{ .Annotations.runbook_url }}\n{{ end }}"
)
"""Each alert's summary and runbook link: what the person paged reads first."""
INHIBIT_RULES = [
    # A critical alert silences the warning of the same name in the same namespace, as the chart's default does.
    {
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity=~"warning|info"'],
        "equal": ["namespace", "alertname"],
    },
    {
        "source_matchers": ['severity="warning"'],
        "target_matchers": ['severity="info"'],
        "equal": ["namespace", "alertname"],
    },
]


def _receiver(receiver: Receiver) -> Obj:
    """One Alertmanager receiver with the credential in clear text: callers keep the result secret."""
    if receiver.type == "webhook":
        assert receiver.url is not None  # the schema requires it
        return {
            "name": receiver.name,
            "webhook_configs": [{"url": receiver.url.get_secret_value(), "send_resolved": True}],
        }
    if receiver.type == "slack":
        assert receiver.url is not None
        slack: Obj = {
            "api_url": receiver.url.get_secret_value(),
            "send_resolved": True,
            "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
            "text": SLACK_TEXT,
        }
        if receiver.channel is not None:
            slack["channel"] = receiver.channel
        return {"name": receiver.name, "slack_configs": [slack]}
    assert receiver.routing_key is not None
    pagerduty: Obj = {
        "routing_key": receiver.routing_key.get_secret_value(),
        "send_resolved": True,
        "description": "{{ .CommonLabels.alertname }}: {{ .CommonAnnotations.summary }}",
        "links": [{"href": "{{ .CommonAnnotations.runbook_url }}", "text": "runbook"}],
    }
    if receiver.url is not None:
        pagerduty["url"] = receiver.url.get_secret_value()
    return {"name": receiver.name, "pagerduty_configs": [pagerduty]}


def alertmanager_config(alerting: Alerting) -> Obj:
    """Alertmanager's configuration: each receiver gets the alerts whose ``severity`` it lists.

    Routes ``continue``, so an alert goes to every receiver that takes its severity (a pager and the
    team channel both hear of a critical alert); the chart's ``Watchdog`` (always firing, to prove the
    pipeline works) and whatever no receiver takes go to ``null``. Groups are per namespace and alert
    name: one message per alert kind and stack.
    """
    routes: list[Obj] = [{"receiver": NULL_RECEIVER, "matchers": ['alertname="Watchdog"']}]
    routes += [
        {"receiver": r.name, "matchers": [f'severity=~"{"|".join(r.severities)}"'], "continue": True}
        for r in alerting.receivers
    ]
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": NULL_RECEIVER,
            "group_by": ["namespace", "alertname"],
            "group_wait": alerting.group_wait,
            "group_interval": alerting.group_interval,
            "repeat_interval": alerting.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": INHIBIT_RULES,
        "receivers": [{"name": NULL_RECEIVER}, *(_receiver(r) for r in alerting.receivers)],
        "templates": ["/etc/alertmanager/config/*.tmpl"],
    }


def helm_values(alerting: Alerting | None = None) -> Obj:
    """kube-prometheus-stack values: Prometheus selects monitors and rules by ``release``, in every
    namespace (``{}`` namespace selectors); Grafana's sidecar loads ConfigMaps labelled
    :data:`~infra.naming.DASHBOARD_LABEL` from its own namespace; Alertmanager routes as
    :func:`alertmanager_config` says (credentials in clear text when there are receivers)."""
    general = {POOL_LABEL: GENERAL_POOL}
    selector = {"matchLabels": {"release": PROMETHEUS_STACK_RELEASE}}
    ((dashboard_label, dashboard_label_value),) = DASHBOARD_LABEL.items()
    return {
        "crds": {"enabled": False},  # from the prometheus-operator-crds release
        "nodeExporter": {"enabled": False},
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "defaultRules": {"rules": {"nodeExporterAlerting": False, "nodeExporterRecording": False}},
        "prometheusOperator": {
            "nodeSelector": general,
            "resources": RESOURCES["operator"],
            "admissionWebhooks": {"patch": {"nodeSelector": general, "resources": RESOURCES["webhook-job"]}},
        },
        "prometheus": {
            "prometheusSpec": {
                "serviceMonitorSelector": selector,
                "serviceMonitorNamespaceSelector": {},
                "podMonitorSelector": selector,
                "podMonitorNamespaceSelector": {},
                "ruleSelector": selector,
                "ruleNamespaceSelector": {},
                "retention": PROMETHEUS_RETENTION,
                "retentionSize": PROMETHEUS_RETENTION_SIZE,
                "nodeSelector": general,
                "resources": RESOURCES["prometheus"],
            }
        },
        "alertmanager": {
            "config": alertmanager_config(alerting or Alerting()),
            "alertmanagerSpec": {"nodeSelector": general, "resources": RESOURCES["alertmanager"]},
        },
        "kubeStateMetrics": {"enabled": True},
        "kube-state-metrics": {"nodeSelector": general, "resources": RESOURCES["kube-state-metrics"]},
        "grafana": {
            "enabled": True,
            # Empty: the Grafana chart generates a random admin password and keeps it in its Secret,
            # instead of kube-prometheus-stack's well-known default.
            "adminPassword": "",
            "nodeSelector": general,
            "resources": RESOURCES["grafana"],
            "sidecar": {
                "resources": RESOURCES["grafana-sidecar"],
                "dashboards": {"enabled": True, "label": dashboard_label, "labelValue": dashboard_label_value},
            },
        },
    }


class PrometheusStack(pulumi.ComponentResource):
    """The monitoring namespace, the operator's CRDs and the kube-prometheus-stack release.

    :param alerting: Alertmanager's receivers (``None``: every alert goes to ``null``).
    :param after: resources the release waits for (the Karpenter NodePools its pods need).
    """

    release: k8s.helm.v3.Release

    def __init__(
        self,
        name: str,
        monitoring: Monitoring,
        *,
        alerting: Alerting | None = None,
        kubernetes_version: str,
        k8s_provider: k8s.Provider,
        after: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:k8s:PrometheusStack", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=k8s_provider)
        ns = build_namespace(monitoring.namespace, kubernetes_version)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata=ns["metadata"], opts=on_cluster)
        values = helm_values(alerting)
        if not (alerting and alerting.receivers):
            pulumi.log.warn(
                "Alertmanager has no receivers: every alert goes to 'null' and no one is told. Add them under "
                "purchase-classifier:alerting (docs/operations.md#configure-who-is-alerted).",
                resource=self,
            )
        in_namespace = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[namespace]))
        crds = k8s.helm.v3.Release(
            f"{name}-crds",
            name=CRD_RELEASE,
            chart=f"{CHART_REPOSITORY}/{CRD_RELEASE}",
            version=CRD_CHART_VERSION,
            namespace=monitoring.namespace,
            opts=in_namespace,
        )
        self.release = k8s.helm.v3.Release(
            name,
            name=PROMETHEUS_STACK_RELEASE,
            chart=f"{CHART_REPOSITORY}/kube-prometheus-stack",
            version=CHART_VERSION,
            namespace=monitoring.namespace,
            skip_crds=True,
            # With receivers, the values hold their URLs: a secret in Pulumi's state and previews.
            values=pulumi.Output.secret(values) if alerting and alerting.receivers else values,
            timeout=HELM_TIMEOUT_SECONDS,
            opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[crds, *after])),
        )
        self.register_outputs({"release": self.release.name})
