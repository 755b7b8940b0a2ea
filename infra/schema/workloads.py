"""The Kubernetes workloads' config: Dask, serving, the CronJobs and monitoring (``workloads:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from infra.catalog import PROMETHEUS_STACK_RELEASE
from infra.quantity import MIB, cpu_millicores, memory_bytes
from infra.schema.base import Cron, DnsLabel, Model, Quantities


class Resources(Model):
    """Container requests and limits; both are required on every container (principle 5)."""

    requests: Quantities = Field(description="What the scheduler reserves for the container.")
    limits: Quantities = Field(description="Hard ceiling; memory above it gets the container OOM-killed.")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if cpu_millicores(self.requests.cpu) > cpu_millicores(self.limits.cpu):
            raise ValueError(
                f"requests.cpu {self.requests.cpu!r} is above limits.cpu {self.limits.cpu!r}; "
                "requests must not exceed limits"
            )
        if memory_bytes(self.requests.memory) > memory_bytes(self.limits.memory):
            raise ValueError(
                f"requests.memory {self.requests.memory!r} is above limits.memory "
                f"{self.limits.memory!r}; requests must not exceed limits"
            )
        return self


NANNY_HEADROOM_MIB = 256
"""Memory kept outside the worker process's limit for the nanny and the Python runtime."""


def worker_memory_limit(res: Resources) -> str:
    """Dask's ``--memory-limit`` for the worker process: the container limit minus the nanny's share.

    The share is 10% or 256 MiB, whichever is larger, so the nanny's terminate threshold fires
    before the kernel's OOM killer does.
    """
    limit_mib = memory_bytes(res.limits.memory) // MIB
    headroom = max(limit_mib // 10, NANNY_HEADROOM_MIB)
    if limit_mib - headroom < 256:
        raise ValueError(
            f"workers.resources.limits.memory {res.limits.memory!r} leaves under 256 MiB for the Dask "
            f"worker after {headroom} MiB of nanny headroom; give workers at least 768Mi"
        )
    return f"{limit_mib - headroom}MiB"


class Autoscaling(Model):
    """HorizontalPodAutoscaler bounds."""

    min_replicas: int = Field(ge=1, le=100, description="Fewest replicas the HPA may scale to.")
    max_replicas: int = Field(ge=1, le=100, description="Most replicas the HPA may scale to.")
    cpu_target_percent: int = Field(
        default=70, ge=10, le=95, description="Average CPU utilisation (% of requests) the HPA aims at."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} is above maxReplicas {self.max_replicas}")
        return self


class DaskScheduler(Model):
    """The Dask scheduler Deployment (always one replica)."""

    resources: Resources = Field(description="Scheduler container resources; its memory limit is its own.")


class DaskWorkers(Model):
    """The Dask workers Deployment; threads and memory limit are derived from `resources.limits`."""

    replicas: int = Field(
        ge=1,
        le=200,
        description="Worker pods (fixed: no CPU autoscaler removes a worker holding results); Karpenter "
        "adds and removes Dask nodes to fit them.",
    )
    resources: Resources = Field(description="Worker container resources.")


class Dask(Model):
    """Dask cluster shared by the train and predict jobs."""

    scheduler: DaskScheduler = Field(description="Scheduler settings.")
    workers: DaskWorkers = Field(description="Worker settings.")


class Serving(Model):
    """The REST prediction service."""

    replicas: int = Field(ge=1, le=100, description="Initial replicas (the HPA takes over after).")
    resources: Resources = Field(description="Server container resources.")
    autoscaling: Autoscaling = Field(description="HPA min/max replicas and CPU target.")
    review_threshold: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Overrides every model's review threshold (chosen at training for its target accuracy); "
        "unset, each model's own is used.",
    )
    allowed_client_namespaces: list[DnsLabel] = Field(
        default_factory=list,
        description="Namespaces whose pods may call the API (NetworkPolicy); empty admits none.",
    )
    candidate_mode: Literal["off", "shadow", "canary"] = Field(
        default="off",
        description="What the registry's CANDIDATE version does (`ML_CANDIDATE_MODE`): `off`; `shadow`, "
        "scores every record beside LATEST, which answers; `canary`, answers `canaryShare` of the records.",
    )
    canary_share: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of records (by a stable hash of their id) the candidate answers in canary mode "
        "(`ML_CANARY_SHARE`).",
    )


class CronJob(Model):
    """One scheduled batch job."""

    schedule: Cron = Field(description="Cron schedule, 5 fields, in the cluster's time zone (UTC).")
    active_deadline_seconds: int = Field(ge=60, le=7 * 24 * 3600, description="Kill the job after this many seconds.")
    backoff_limit: int = Field(ge=0, le=10, description="Retries before the job is marked failed.")
    starting_deadline_seconds: int = Field(
        ge=10, le=24 * 3600, description="Skip a run that could not start within this many seconds."
    )
    ttl_seconds_after_finished: int = Field(
        ge=0, le=30 * 24 * 3600, description="Delete finished jobs (and their pods) after this many seconds."
    )
    resources: Resources = Field(description="Job container resources.")
    suspend: bool = Field(default=False, description="Pause the schedule without deleting the CronJob.")


class Jobs(Model):
    """The three pipeline CronJobs."""

    refresh: CronJob = Field(description="Source DB to training snapshot.")
    train: CronJob = Field(description="Training snapshot to model version (on Dask).")
    predict: CronJob = Field(description="Unlabeled purchases to predictions table (on Dask).")


class Monitoring(Model):
    """Prometheus Operator objects (ServiceMonitors, PodMonitor, PrometheusRule) and the Grafana dashboard.

    Off by default: the `monitoring.coreos.com` kinds exist only where the Prometheus Operator (e.g.
    kube-prometheus-stack) is installed, and applying them elsewhere fails.
    """

    enabled: bool = Field(
        default=False,
        description="Declare the monitoring objects; needs the Prometheus Operator's CRDs in the cluster.",
    )
    install: bool = Field(
        default=False,
        description="Install the Prometheus Operator, its CRDs, Prometheus, Alertmanager, kube-state-metrics "
        "and Grafana (Helm chart `kube-prometheus-stack`, pinned) in `namespace`, before the monitoring "
        "objects: what a cluster this stack creates needs (eks mode). `false`: the cluster already runs an "
        "operator that selects `selectorLabels` (existing mode, or an operator another program installs).",
    )
    namespace: DnsLabel = Field(
        default="monitoring",
        description="Namespace of Prometheus and Grafana: admitted to the metrics ports by the NetworkPolicies, "
        "and home of the dashboard ConfigMap (Grafana's sidecar watches its own namespace by default).",
    )
    selector_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels put on the monitors and the rule so your Prometheus selects them "
        "(kube-prometheus-stack: `release: <release name>`).",
    )
    runbook_url: str = Field(
        default="docs/runbook.md",
        min_length=1,
        description="Where readers open `docs/runbook.md` (e.g. its page in your repository's web view); "
        "each alert's `runbook_url` is this plus `#<alert name in lower case>`.",
    )
    latency_p99_seconds: float = Field(
        default=0.25, gt=0.0, le=60.0, description="Serving SLO: p99 latency of the prediction routes over 5 min."
    )
    error_ratio: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="Serving SLO: share of requests answered 5xx over 5 min."
    )
    confidence_drift: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Alert when a model version's mean confidence over 1 h falls this far below its validation mean.",
    )
    review_share_drift: float = Field(
        default=0.10,
        gt=0.0,
        lt=1.0,
        description="Alert when a model version's share flagged for review over 1 h rises this far above "
        "its validation share.",
    )

    @model_validator(mode="after")
    def _install_rules(self) -> Monitoring:
        if not self.install:
            return self
        if not self.enabled:
            raise ValueError(
                "install is true but enabled is false; the operator is installed for the monitoring objects"
            )
        if self.selector_labels.get("release") != PROMETHEUS_STACK_RELEASE:
            raise ValueError(
                f"install is true but selectorLabels is {self.selector_labels}; the installed Prometheus selects "
                f"`release: {PROMETHEUS_STACK_RELEASE}`, the label the chart's own monitors (kube-state-metrics, "
                "which the CronJob alerts read) carry too; set selectorLabels to include it"
            )
        return self


class Workloads(Model):
    """Kubernetes workloads (declared by `infra/k8s`)."""

    namespace: DnsLabel = Field(description="Namespace for every workload.")
    model_name: DnsLabel = Field(default="purchase-classifier", description="Model name under `models/` in the bucket.")
    dask: Dask = Field(description="Dask scheduler and workers.")
    serving: Serving = Field(description="REST serving.")
    jobs: Jobs = Field(description="Refresh, train and predict CronJobs.")
    monitoring: Monitoring = Field(
        default_factory=Monitoring, description="Prometheus Operator monitors, alert rules and the Grafana dashboard."
    )
