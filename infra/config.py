"""Typed, validated stack configuration.

Every key under the ``purchase-classifier:`` namespace of a ``Pulumi.<stack>.yaml`` is parsed here,
once, before any resource is declared. A bad value stops the program with the key, the value and what
is allowed (:class:`ConfigError`), instead of surfacing minutes later as a cloud API error halfway
through an update.

YAML keys are camelCase (Pulumi's convention); the Python attributes are snake_case. Field
descriptions double as the documentation: the configuration table in docs/platform.md is generated from them
(:func:`config_reference_markdown`, ``python -m infra.config``) and a test keeps it in sync.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from infra.naming import PROJECT

NAMESPACE = f"{PROJECT}:"

SECRET_KEYS: frozenset[str] = frozenset({"databaseUrl", "kubeconfig", "storageAccessKeyId", "storageSecretAccessKey"})
"""Top-level keys that must be set with ``pulumi config set --secret``."""

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_CRON_FIELD_RE = re.compile(r"^[\d*/,\-A-Za-z?]+$")
_CPU_RE = re.compile(r"^(\d+(\.\d+)?)(m?)$")
_MEM_RE = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEM_FACTORS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653)
"""The retention values CloudWatch Logs accepts."""
INTERFACE_ENDPOINT_SERVICES = ("ecr.api", "ecr.dkr", "sts", "logs", "ec2", "elasticloadbalancing")


class ConfigError(Exception):
    """The stack config is invalid; ``problems`` lists one line per bad key."""

    def __init__(self, stack: str, problems: list[str]) -> None:
        self.stack = stack
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config for stack {stack!r}:\n{lines}")


# --------------------------------------------------------------------------- quantity helpers


def cpu_millicores(value: str) -> int:
    """Kubernetes CPU quantity (``"250m"``, ``"1"``, ``"0.5"``) in millicores."""
    m = _CPU_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a CPU quantity (e.g. '250m', '1', '1.5')")
    number = Decimal(m.group(1))
    return int(number if m.group(3) else number * 1000)


def memory_bytes(value: str) -> int:
    """Kubernetes memory quantity (``"512Mi"``, ``"2Gi"``, ``"1G"``) in bytes."""
    m = _MEM_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory quantity (e.g. '512Mi', '2Gi')")
    try:
        return int(Decimal(m.group(1)) * _MEM_FACTORS[m.group(3)])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{value!r} is not a memory quantity") from exc


def _check_cpu(value: str) -> str:
    if cpu_millicores(value) <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return value


def _check_memory(value: str) -> str:
    if memory_bytes(value) < 2**20:
        raise ValueError(f"{value!r} must be at least 1Mi (did you forget the unit, e.g. '512Mi'?)")
    return value


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL_RE.match(value):
        raise ValueError(f"{value!r} is not a DNS label (lowercase letters, digits, '-', at most 63)")
    return value


def _check_cron(value: str) -> str:
    fields = value.split()
    if value.startswith("@") or len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
        raise ValueError(f"{value!r} is not a 5-field cron schedule (e.g. '0 3 * * *')")
    return value


def _check_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block (e.g. '10.0.0.0/16'): {exc}") from exc
    if net.version != 4:
        raise ValueError(f"{value!r} must be an IPv4 CIDR block")
    return value


Cpu = Annotated[str, AfterValidator(_check_cpu)]
Memory = Annotated[str, AfterValidator(_check_memory)]
DnsLabel = Annotated[str, AfterValidator(_check_dns_label)]
Cron = Annotated[str, AfterValidator(_check_cron)]
Cidr = Annotated[str, AfterValidator(_check_cidr)]


class _Model(BaseModel):
    """Base: camelCase keys in YAML, unknown keys rejected, immutable once parsed."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=False,
    )


# --------------------------------------------------------------------------- workloads


class Quantities(_Model):
    """CPU and memory quantities, in Kubernetes notation."""

    cpu: Cpu = Field(description="CPU, e.g. `250m` or `2`.")
    memory: Memory = Field(description="Memory, e.g. `512Mi` or `4Gi`.")


class Resources(_Model):
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


class Autoscaling(_Model):
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


class DaskScheduler(_Model):
    """The Dask scheduler Deployment (always one replica)."""

    resources: Resources = Field(description="Scheduler container resources; its memory limit is its own.")


class DaskWorkers(_Model):
    """The Dask workers Deployment; threads and memory limit are derived from `resources.limits`."""

    replicas: int = Field(
        ge=1,
        le=200,
        description="Worker pods (fixed: no CPU autoscaler removes a worker holding results); Karpenter "
        "adds and removes Dask nodes to fit them.",
    )
    resources: Resources = Field(description="Worker container resources.")


class Dask(_Model):
    """Dask cluster shared by the train and predict jobs."""

    scheduler: DaskScheduler = Field(description="Scheduler settings.")
    workers: DaskWorkers = Field(description="Worker settings.")


class Serving(_Model):
    """The REST prediction service."""

    replicas: int = Field(ge=1, le=100, description="Initial replicas (the HPA takes over after).")
    resources: Resources = Field(description="Server container resources.")
    autoscaling: Autoscaling = Field(description="HPA min/max replicas and CPU target.")
    review_threshold: float = Field(
        gt=0.0,
        lt=1.0,
        description="Predictions with confidence below this are flagged for expert review.",
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


class CronJob(_Model):
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


class Jobs(_Model):
    """The three pipeline CronJobs."""

    refresh: CronJob = Field(description="Source DB to training snapshot.")
    train: CronJob = Field(description="Training snapshot to model version (on Dask).")
    predict: CronJob = Field(description="Unlabeled purchases to predictions table (on Dask).")


PROMETHEUS_STACK_RELEASE = "kube-prometheus-stack"
"""Helm release name of the operator stack ``workloads.monitoring.install`` installs; its Prometheus
selects monitors and rules labelled ``release: <this>``."""


class Monitoring(_Model):
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


class Workloads(_Model):
    """Kubernetes workloads (declared by `infra/k8s`)."""

    namespace: DnsLabel = Field(description="Namespace for every workload.")
    model_name: DnsLabel = Field(default="purchase-classifier", description="Model name under `models/` in the bucket.")
    dask: Dask = Field(description="Dask scheduler and workers.")
    serving: Serving = Field(description="REST serving.")
    jobs: Jobs = Field(description="Refresh, train and predict CronJobs.")
    monitoring: Monitoring = Field(
        default_factory=Monitoring, description="Prometheus Operator monitors, alert rules and the Grafana dashboard."
    )


# --------------------------------------------------------------------------- AWS platform


ADDON_NAMES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent", "coredns", "aws-ebs-csi-driver", "metrics-server")
"""EKS managed addons every eks-mode cluster runs (metrics-server: the HPAs' resource metrics)."""

_ADDON_VERSION_RE = r"^v\d+\.\d+\.\d+-eksbuild\.\d+$"


class AddonVersions(_Model):
    """Exact EKS addon versions for one Kubernetes version (``aws eks describe-addon-versions``)."""

    vpc_cni: str = Field(pattern=_ADDON_VERSION_RE)
    kube_proxy: str = Field(pattern=_ADDON_VERSION_RE)
    eks_pod_identity_agent: str = Field(pattern=_ADDON_VERSION_RE)
    coredns: str = Field(pattern=_ADDON_VERSION_RE)
    aws_ebs_csi_driver: str = Field(pattern=_ADDON_VERSION_RE)
    metrics_server: str = Field(pattern=_ADDON_VERSION_RE)

    def for_addon(self, addon: str) -> str:
        """The pinned version of ``addon`` (an :data:`ADDON_NAMES` entry)."""
        return str(getattr(self, addon.replace("-", "_")))


DEFAULT_CLUSTER_VERSION = "1.35"
SUPPORTED_CLUSTER_VERSIONS: dict[str, AddonVersions] = {
    # EKS standard support for 1.35 runs into 2027. Versions as `aws eks describe-addon-versions
    # --kubernetes-version 1.35` listed them in October 2026 (defaults, or the newest build where
    # the default lagged). Upgrading the cluster starts by adding the next version's row here
    # (docs/cluster.md, "Upgrading the cluster").
    "1.35": AddonVersions(
        vpc_cni="v1.22.4-eksbuild.3",
        kube_proxy="v1.35.3-eksbuild.29",
        eks_pod_identity_agent="v1.3.10-eksbuild.3",
        coredns="v1.13.2-eksbuild.31",
        aws_ebs_csi_driver="v1.64.0-eksbuild.1",
        metrics_server="v0.9.0-eksbuild.6",
    ),
}
"""Cluster versions this program supports, each with its pinned addon versions."""

GIB_PER_VCPU = {"c": 2, "m": 4, "r": 8}
"""Memory per vCPU of the EC2 instance categories a node pool may use (compute, general, memory)."""


class SystemNodes(_Model):
    """The small on-demand managed node group for system pods and Karpenter itself (tainted
    ``CriticalAddonsOnly``: workloads go to the Karpenter pools)."""

    instance_types: list[str] = Field(min_length=1, description="EC2 instance types, preferred first.")
    min_size: int = Field(ge=1, le=10, description="Fewest nodes (Karpenter runs here, so at least 1).")
    max_size: int = Field(ge=1, le=10, description="Most nodes.")
    desired_size: int = Field(ge=1, le=10, description="Nodes at creation; later changes are ignored.")
    disk_size_gb: int = Field(default=50, ge=20, le=1000, description="Encrypted gp3 root volume size in GiB.")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> SystemNodes:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(
                f"sizes must satisfy minSize <= desiredSize <= maxSize, got {self.min_size} <= "
                f"{self.desired_size} <= {self.max_size}"
            )
        return self


class NodePool(_Model):
    """One Karpenter NodePool: which instances it may launch, and how much in total."""

    capacity_types: list[Literal["spot", "on-demand"]] = Field(
        min_length=1, description="`spot` and/or `on-demand`; with both, Karpenter prefers spot."
    )
    instance_categories: list[Literal["c", "m", "r"]] = Field(
        min_length=1, description="EC2 categories: `c` (2 GiB/vCPU), `m` (4), `r` (8)."
    )
    min_instance_cpu: int = Field(ge=1, le=192, description="Smallest instance size, in vCPUs.")
    max_instance_cpu: int = Field(ge=1, le=192, description="Largest instance size, in vCPUs.")
    min_instance_generation: int = Field(default=6, ge=1, le=10, description="Oldest instance generation.")
    limits: Quantities = Field(description="Most CPU and memory the pool's nodes may add up to.")
    disk_size_gb: int = Field(default=50, ge=20, le=1000, description="Encrypted gp3 root volume size in GiB.")

    @model_validator(mode="after")
    def _cpu_ordered(self) -> NodePool:
        if self.min_instance_cpu > self.max_instance_cpu:
            raise ValueError(f"minInstanceCpu {self.min_instance_cpu} is above maxInstanceCpu {self.max_instance_cpu}")
        for key in ("capacity_types", "instance_categories"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{to_camel(key)} {values} lists a value twice")
        return self


class NodePools(_Model):
    """The two Karpenter NodePools."""

    dask: NodePool = Field(description="Dask workers only (labelled and tainted); spot is fine.")
    general: NodePool = Field(description="Scheduler, serving and jobs.")


class Protection(_Model):
    """Guards on the stateful resources: EKS cluster, KMS keys, bucket and ECR repository."""

    protect: bool = Field(default=True, description="Pulumi refuses to delete them (`protect`).")
    retain_on_delete: bool = Field(
        default=True, description="Deleting them from the program leaves them in AWS (`retainOnDelete`)."
    )


class Cluster(_Model):
    """Where the workloads run."""

    mode: Literal["eks", "existing"] = Field(
        description="`eks`: create network, EKS, ECR, S3 and identities. `existing`: deploy onto a "
        "cluster from a kubeconfig/context with an existing registry and S3-compatible store."
    )
    name: DnsLabel = Field(description="Cluster name (eks) or a label for the existing cluster.")
    version: str = Field(
        default=DEFAULT_CLUSTER_VERSION,
        pattern=r"^1\.\d{2}$",
        description="Kubernetes version of the control plane (Pod Security is pinned to it); eks mode: one of "
        f"{', '.join(SUPPORTED_CLUSTER_VERSIONS)}, whose addon versions are pinned.",
    )
    endpoint_public_access: bool = Field(
        default=False, description="Expose the API endpoint publicly (only to `publicAccessCidrs`)."
    )
    public_access_cidrs: list[Cidr] = Field(
        default_factory=list, description="CIDRs allowed to reach a public API endpoint; never 0.0.0.0/0."
    )
    admin_role_arns: list[str] = Field(
        default_factory=list, description="IAM roles granted cluster-admin through EKS access entries."
    )
    viewer_role_arns: list[str] = Field(
        default_factory=list,
        description="IAM roles granted read access to every Kubernetes object, Secrets included "
        "(EKS `AmazonEKSAdminViewPolicy`): the CI preview and drift-detection role.",
    )
    log_retention_days: int = Field(
        default=30,
        description=f"Control-plane log retention; one of {', '.join(map(str, LOG_RETENTION_DAYS))}.",
    )
    system_nodes: SystemNodes | None = Field(
        default=None, description="Managed node group for system pods and Karpenter (eks mode)."
    )
    node_pools: NodePools | None = Field(default=None, description="Karpenter NodePools (eks mode).")
    context: str | None = Field(
        default=None, description="Kubeconfig context (existing mode); default is the current context."
    )

    @field_validator("public_access_cidrs")
    @classmethod
    def _no_world(cls, value: list[str]) -> list[str]:
        for cidr in value:
            if ipaddress.ip_network(cidr).prefixlen == 0:
                raise ValueError(f"{cidr!r} opens the API endpoint to the internet; list specific CIDRs")
        return value

    @field_validator("admin_role_arns", "viewer_role_arns")
    @classmethod
    def _role_arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not _ROLE_ARN_RE.match(arn):
                raise ValueError(f"{arn!r} is not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)")
        # Two access entries for one principal cannot exist: EKS rejects the second mid-update.
        duplicates = sorted({arn for arn in value if value.count(arn) > 1})
        if duplicates:
            raise ValueError(f"{duplicates} listed more than once; each role gets exactly one access entry")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"{value} is not a CloudWatch retention; allowed: {LOG_RETENTION_DAYS}")
        return value

    @model_validator(mode="after")
    def _mode_rules(self) -> Cluster:
        both = sorted(set(self.admin_role_arns) & set(self.viewer_role_arns))
        if both:
            raise ValueError(f"{both} in both adminRoleArns and viewerRoleArns; a role gets one access entry")
        if self.mode == "eks":
            if self.system_nodes is None or self.node_pools is None:
                raise ValueError("systemNodes and nodePools are required when mode is 'eks'")
            if self.version not in SUPPORTED_CLUSTER_VERSIONS:
                raise ValueError(
                    f"version {self.version!r} is not a supported EKS version; supported: "
                    f"{', '.join(SUPPORTED_CLUSTER_VERSIONS)} (first add the version's addon row to infra/config.py)"
                )
            if self.endpoint_public_access and not self.public_access_cidrs:
                raise ValueError("endpointPublicAccess is true but publicAccessCidrs is empty; list CIDRs")
        return self


class Network(_Model):
    """The VPC (eks mode)."""

    cidr: Cidr = Field(description="VPC CIDR, /16 to /20; subnets are carved from it.")
    availability_zones: list[str] = Field(
        min_length=2, max_length=6, description="AZs to spread subnets over (at least 2)."
    )
    nat_gateways: Literal["single", "perAz"] = Field(
        description="`single` (cheap, one AZ's NAT is a shared egress point) or `perAz` (resilient)."
    )
    interface_endpoints: list[Literal["ecr.api", "ecr.dkr", "sts", "logs", "ec2", "elasticloadbalancing"]] = Field(
        default_factory=list, description="Interface VPC endpoints to create (private AWS API access)."
    )

    @field_validator("cidr")
    @classmethod
    def _prefix(cls, value: str) -> str:
        prefix = ipaddress.ip_network(value).prefixlen
        if not 16 <= prefix <= 20:
            raise ValueError(f"{value!r} has prefix /{prefix}; allowed /16 to /20")
        return value

    @field_validator("availability_zones")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists an availability zone twice")
        return value


class Storage(_Model):
    """The object store for training snapshots, models and prediction exports."""

    bucket_name: str | None = Field(
        default=None,
        description="Bucket name; eks mode: omit for a generated name; existing mode: required.",
    )
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="S3-compatible endpoint (existing mode, e.g. MinIO); omit for AWS S3.",
    )
    training_snapshot_expiration_days: int = Field(
        default=90, ge=1, le=3650, description="Delete objects under `training/` this many days old."
    )
    noncurrent_version_expiration_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Delete overwritten/deleted object versions after this many days.",
    )
    force_destroy: bool = Field(default=False, description="Let `pulumi destroy` delete a non-empty bucket.")

    @field_validator("bucket_name")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET_RE.match(value):
            raise ValueError(f"{value!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
        return value


class Ecr(_Model):
    """The ECR repository (eks mode). Tags are always immutable and images scanned on push."""

    repository_name: str = Field(
        default=PROJECT, pattern=r"^[a-z0-9][a-z0-9._/-]{1,255}$", description="Repository name."
    )
    untagged_expiry_days: int = Field(default=7, ge=1, le=365, description="Expire untagged images after this.")
    keep_tagged_images: int = Field(
        default=50,
        ge=10,
        le=1000,
        description="Keep the newest this many tagged images, expire older ones; must cover every image a "
        "stack runs or may roll back to (promoted registries hold only promoted images).",
    )
    force_delete: bool = Field(default=False, description="Let `pulumi destroy` delete a repository with images.")


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


class StackConfig(_Model):
    """Everything under ``purchase-classifier:`` in a stack file."""

    environment: Literal["dev", "staging", "prod", "local"] = Field(
        description="Environment name, used in tags and resource names."
    )
    cluster: Cluster = Field(description="Cluster mode and EKS settings.")
    network: Network | None = Field(default=None, description="VPC settings (required in eks mode).")
    storage: Storage = Field(description="Object store settings.")
    ecr: Ecr = Field(default_factory=Ecr, description="ECR repository settings (eks mode).")
    protection: Protection = Field(
        default_factory=Protection, description="`protect`/`retainOnDelete` of the stateful resources (eks mode)."
    )
    registry: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+$",
        description="Image repository `<host>[:port]/<path>` (existing mode; eks mode uses its ECR).",
    )
    image_digest: str | None = Field(
        default=None,
        description="Classifier image digest `sha256:<64 hex>`; empty on a fresh stack (workloads skipped). "
        "Promotion copies it between stacks.",
    )
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL of the source/predictions DB (secret)."
    )
    kubeconfig: SecretStr | None = Field(
        default=None, description="Kubeconfig contents (secret, existing mode); default: the local one."
    )
    storage_access_key_id: SecretStr | None = Field(
        default=None, description="S3-compatible access key (secret, existing mode)."
    )
    storage_secret_access_key: SecretStr | None = Field(
        default=None, description="S3-compatible secret key (secret, existing mode)."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every AWS resource.")
    workloads: Workloads = Field(description="Kubernetes workloads (namespace, Dask, serving, jobs).")

    @field_validator("image_digest", mode="before")
    @classmethod
    def _digest(cls, value: Any) -> Any:
        value = _empty_to_none(value)
        if value is not None and not (isinstance(value, str) and _DIGEST_RE.match(value)):
            raise ValueError(
                f"{value!r} is not an image digest; use 'sha256:<64 lowercase hex>' (tags are refused: "
                "stacks pin images by digest)"
            )
        return value

    @field_validator("registry", "database_url", "kubeconfig", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _empty_to_none(value)

    @model_validator(mode="after")
    def _mode_rules(self) -> StackConfig:
        if self.cluster.mode == "eks":
            if self.network is None:
                raise ValueError("network is required when cluster.mode is 'eks'")
            for key in ("registry", "kubeconfig", "storage_access_key_id", "storage_secret_access_key"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{to_camel(key)} is only used when cluster.mode is 'existing'")
            if self.storage.endpoint_url is not None:
                raise ValueError("storage.endpointUrl is only used when cluster.mode is 'existing'")
        else:
            if self.workloads.monitoring.install:
                raise ValueError(
                    "workloads.monitoring.install is only used when cluster.mode is 'eks': an existing cluster's "
                    f"platform services are yours; install the Prometheus Operator there (e.g. Helm release "
                    f"{PROMETHEUS_STACK_RELEASE!r}) and set install: false"
                )
            if self.registry is None:
                raise ValueError("registry is required when cluster.mode is 'existing'")
            if self.storage.bucket_name is None:
                raise ValueError("storage.bucketName is required when cluster.mode is 'existing'")
        if self.image_digest is not None and self.database_url is None:
            raise ValueError(
                "databaseUrl is required once imageDigest is set (the jobs need it); set it with "
                "`pulumi config set --secret purchase-classifier:databaseUrl <url>`"
            )
        return self

    @property
    def is_eks(self) -> bool:
        """True when this stack creates the AWS platform."""
        return self.cluster.mode == "eks"


# --------------------------------------------------------------------------- parsing


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to programs as JSON text; scalars stay strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _key_path(loc: Iterable[int | str]) -> str:
    path = NAMESPACE.rstrip(":")
    first = True
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += (":" if first else ".") + part
            first = False
    return path


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The camelCase keys allowed at ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = next((f for name, f in current.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return []
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return []


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = _key_path(loc) if loc else NAMESPACE.rstrip(":")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(StackConfig, loc)
            problems.append(f"{key}: unknown key; allowed keys here: {', '.join(allowed)}")
            continue
        if err["type"] == "missing":
            problems.append(f"{key}: required key is missing")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        shown = "<secret>" if loc and loc[0] in SECRET_KEYS else repr(value)
        if isinstance(value, dict):
            problems.append(f"{key}: {msg}")
        else:
            problems.append(f"{key}: got {shown}; {msg}")
    return problems


def parse_config(
    raw: Mapping[str, Any],
    *,
    secret_keys: Iterable[str] = (),
    stack: str = "<stack>",
    aws_region: str | None = None,
) -> StackConfig:
    """Parse a flat Pulumi config map (``{"purchase-classifier:cluster": "<json>", ...}``).

    Keys of other namespaces (``aws:region``, ``kubernetes:...``) are ignored here. Raises
    :class:`ConfigError` listing every problem at once, so a user fixes the file in one pass.
    """
    secret = set(secret_keys)
    data: dict[str, Any] = {}
    problems: list[str] = []
    for full_key, value in raw.items():
        if not full_key.startswith(NAMESPACE):
            continue
        key = full_key.removeprefix(NAMESPACE)
        if key in SECRET_KEYS and _empty_to_none(value) is not None and full_key not in secret:
            problems.append(
                f"{full_key}: is stored in plain text; it is a secret, set it with "
                f"`pulumi config set --secret {full_key} <value>`"
            )
        data[key] = _decode(value)
    try:
        parsed = StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(stack, problems + _problems(exc)) from None
    if aws_region and parsed.network is not None:
        for zone in parsed.network.availability_zones:
            if not zone.startswith(aws_region):
                problems.append(f"{NAMESPACE}network.availabilityZones: got {zone!r}; not in aws:region {aws_region!r}")
    if parsed.is_eks and not aws_region:
        problems.append("aws:region: required key is missing (eks mode creates AWS resources)")
    from infra.aws.capacity import capacity_problems  # imports this module: loaded on first use

    problems.extend(capacity_problems(parsed, NAMESPACE))
    if problems:
        raise ConfigError(stack, problems)
    return parsed


def load_from_pulumi() -> StackConfig:
    """Read the running program's config (CLI or mocks) and parse it.

    The Python SDK has no public "list all keys" call; the language host passes the whole map in
    ``PULUMI_CONFIG`` and the mocks/automation API set it in ``pulumi.runtime.config``. Reading the
    full map is what lets unknown keys (typos) be rejected instead of silently ignored.
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env()) | set(runtime_config._SECRET_KEYS.get())
    return parse_config(raw, secret_keys=secret_keys, stack=pulumi.get_stack(), aws_region=raw.get("aws:region"))


# --------------------------------------------------------------------------- documentation


def _iter_fields(model: type[BaseModel], prefix: str) -> Iterable[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        nested = [
            c
            for c in (annotation, *getattr(annotation, "__args__", ()))
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            made = field.default_factory()  # type: ignore[call-arg]
            default = "—" if isinstance(made, BaseModel) else f"`{json.dumps(made)}`"
        else:
            default = f"`{json.dumps(field.default)}`" if field.default is not None else "—"
        yield key, _type_name(annotation), default, field.description or ""
        if nested:
            yield from _iter_fields(nested[0], f"{key}.")


def _type_name(annotation: Any) -> str:
    """A YAML-flavoured type name for the reference table (independent of module names)."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (UnionType, Union):
        return " \\| ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean", SecretStr: "string"}.get(
        annotation, str(annotation)
    )


def config_reference_markdown() -> str:
    """The stack configuration table of docs/platform.md, generated from the field descriptions."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, type_name, default, description in _iter_fields(StackConfig, NAMESPACE):
        lines.append(f"| `{key}` | {type_name} | {default} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(config_reference_markdown(), end="")
