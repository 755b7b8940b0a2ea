"""The REST prediction service: Deployment, Service, HPA, PDB and its ingress NetworkPolicy.

Rollouts never drop capacity (``maxUnavailable: 0``) because the application calls this service
synchronously; pods spread over zones and nodes so one lost node or zone leaves replicas serving.
Settings reach the server as environment variables read by its pydantic-settings class.
"""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import (
    HPA_OWNED_FIELDS,
    SERVING,
    SERVING_PORT,
    Context,
    Obj,
    build_cpu_hpa,
    container,
    env_value,
    http_probe,
    labels,
    metadata,
    pod_spec,
    prometheus_ingress,
    selector_labels,
    storage_env,
    storage_secrets,
)
from infra.naming import SA_SERVING

SERVE_ARGS = ["serve", "--host", "0.0.0.0", "--port", str(SERVING_PORT)]
READY_PATH = "/readyz"
LIVE_PATH = "/healthz"
METRICS_PATH = "/metrics"
PRE_STOP_SLEEP_SECONDS = 10
"""A stopping pod keeps serving this long before it gets SIGTERM: kube-proxy and every client's
endpoint list drop it first, so a rollout or node drain sends no request to a closed socket. The
kubelet's built-in sleep (no shell in the image); well inside the 30 s termination grace."""
REVIEW_THRESHOLD_ENV = "ML_REVIEW_THRESHOLD"
"""Env var of the serving settings (``ml/serve/settings.py``) for the review threshold."""
CANDIDATE_MODE_ENV = "ML_CANDIDATE_MODE"
CANARY_SHARE_ENV = "ML_CANARY_SHARE"


def serving_env(ctx: Context) -> list[Obj]:
    """The server's settings: store and model name (from :func:`storage_env`), its threshold and
    what it does with a candidate model."""
    serving = ctx.workloads.serving
    # Unset, the server flags each model's lines below the threshold chosen at its training.
    override = (
        [] if serving.review_threshold is None else [env_value(REVIEW_THRESHOLD_ENV, str(serving.review_threshold))]
    )
    return [
        *storage_env(ctx),
        *override,
        env_value(CANDIDATE_MODE_ENV, serving.candidate_mode),
        env_value(CANARY_SHARE_ENV, str(serving.canary_share)),
    ]


def build_deployment(ctx: Context) -> Obj:
    serving = ctx.workloads.serving
    main = container(
        ctx,
        "server",
        SERVE_ARGS,
        serving.resources,
        env=serving_env(ctx),
        secrets=storage_secrets(ctx),
        ports=[{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        # Ready only once a model is loaded; alive as long as the event loop answers.
        readiness=http_probe(READY_PATH, "http", initial_delay=5, period=5),
        liveness=http_probe(LIVE_PATH, "http", initial_delay=15, period=15, failure_threshold=4),
    )
    main["lifecycle"] = {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}}
    selector = {"matchLabels": selector_labels(ctx, SERVING)}
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": selector,
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, SERVING, SERVING),
        "spec": {
            "replicas": serving.replicas,
            "selector": selector,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels(ctx, SERVING),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVING_PORT),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": pod_spec([main], SA_SERVING, topologySpreadConstraints=spread),
            },
        },
    }


def build_service(ctx: Context) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, SERVING, SERVING),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ctx, SERVING),
            "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_hpa(ctx: Context) -> Obj:
    return build_cpu_hpa(ctx, SERVING, ctx.workloads.serving.autoscaling)


def build_pdb(ctx: Context) -> Obj:
    """Voluntary disruptions take one pod at a time; with one replica a drain still proceeds."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ctx, SERVING, SERVING),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(ctx, SERVING)}},
    }


def build_network_policy(ctx: Context) -> Obj:
    """Clients only from the configured namespaces, and Prometheus's when monitoring is enabled.

    An empty list leaves ``ingress: []``: the service admits no one, which is the safe default.
    """
    namespaces = ctx.workloads.serving.allowed_client_namespaces
    ingress = (
        [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/metadata.name",
                                    "operator": "In",
                                    "values": sorted(namespaces),
                                }
                            ]
                        }
                    }
                ],
                "ports": [{"protocol": "TCP", "port": SERVING_PORT}],
            }
        ]
        if namespaces
        else []
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ctx, SERVING, SERVING),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(ctx, SERVING)},
            "policyTypes": ["Ingress"],
            "ingress": ingress + prometheus_ingress(ctx, SERVING_PORT),
        },
    }


class Serving(pulumi.ComponentResource):
    """The serving Deployment and everything around it."""

    def __init__(
        self,
        name: str,
        ctx: pulumi.Output[Context],
        opts: pulumi.ResourceOptions | None = None,
        after: list[pulumi.Resource] | None = None,
    ) -> None:
        """:param after: what the Deployment waits for: the first training run (see ``Bootstrap``),
        since a pod becomes ready only once a model exists."""
        super().__init__("purchase-classifier:k8s:Serving", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def obj(builder: Callable[[Context], Obj]) -> pulumi.Output[Obj]:
            return ctx.apply(builder)

        deployment = obj(build_deployment)
        # The HPA below owns the replica count once the Deployment exists.
        scaled = pulumi.ResourceOptions(parent=self, ignore_changes=list(HPA_OWNED_FIELDS), depends_on=after)
        k8s.apps.v1.Deployment(name, metadata=deployment["metadata"], spec=deployment["spec"], opts=scaled)
        service = obj(build_service)
        k8s.core.v1.Service(name, metadata=service["metadata"], spec=service["spec"], opts=child)
        hpa = obj(build_hpa)
        k8s.autoscaling.v2.HorizontalPodAutoscaler(name, metadata=hpa["metadata"], spec=hpa["spec"], opts=child)
        pdb = obj(build_pdb)
        k8s.policy.v1.PodDisruptionBudget(name, metadata=pdb["metadata"], spec=pdb["spec"], opts=child)
        policy = obj(build_network_policy)
        k8s.networking.v1.NetworkPolicy(name, metadata=policy["metadata"], spec=policy["spec"], opts=child)
        self.url = ctx.apply(lambda c: f"http://{SERVING}.{c.namespace}.svc:{SERVING_PORT}")
        self.register_outputs({"url": self.url})
