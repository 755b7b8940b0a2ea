"""Names shared by the AWS side and the Kubernetes side of the program.

They live apart from both so that an IAM trust binding (AWS) and the ServiceAccount it binds to
(Kubernetes) cannot drift: both import the same constant.
"""

from __future__ import annotations

PROJECT = "purchase-classifier"
"""Pulumi project name and config namespace (``purchase-classifier:<key>``)."""

# ServiceAccount names, one per workload. The scheduler gets a ServiceAccount but no cloud identity:
# it never touches the bucket.
SA_DASK_SCHEDULER = "dask-scheduler"
SA_DASK_WORKER = "dask-worker"
SA_REFRESH = "refresh"
SA_TRAIN = "train"
SA_PREDICT = "predict"
SA_SERVING = "serving"

SERVICE_ACCOUNTS: tuple[str, ...] = (
    SA_DASK_SCHEDULER,
    SA_DASK_WORKER,
    SA_REFRESH,
    SA_TRAIN,
    SA_PREDICT,
    SA_SERVING,
)
"""Every workload's ServiceAccount name, in a stable order."""

IDENTITY_WORKLOADS: tuple[str, ...] = (SA_DASK_WORKER, SA_REFRESH, SA_TRAIN, SA_PREDICT, SA_SERVING)
"""Workloads that get a cloud identity (IAM role + Pod Identity association) in eks mode."""

# The Dask worker node group: workers select it by label and tolerate its taint; nothing else
# tolerates the taint, so the (often spot) Dask nodes never host serving or system pods.
DASK_NODE_LABEL_KEY = "purchase-classifier/pool"
DASK_NODE_LABEL_VALUE = "dask"
DASK_TAINT_KEY = "purchase-classifier/dask"
DASK_TAINT_VALUE = "true"
DASK_TAINT_EFFECT = "NoSchedule"
"""Kubernetes spelling of the taint effect (EKS's API spells it ``NO_SCHEDULE``)."""
POOL_LABEL = DASK_NODE_LABEL_KEY
"""Node label naming the pool (``system``, ``dask`` or ``general``); workers select ``dask``."""
SYSTEM_TAINT_KEY = "CriticalAddonsOnly"
"""The system node group's taint: only pods that tolerate it (CoreDNS, Karpenter) land there."""
DISCOVERY_TAG = "karpenter.sh/discovery"
"""Tag on the private subnets and the cluster security group: where Karpenter places nodes."""
DASHBOARD_LABEL = {"grafana_dashboard": "1"}
"""The label Grafana's dashboard sidecar (kube-prometheus-stack, the Grafana chart) watches for."""

# S3 key prefixes of the one bucket. IAM policies are scoped to these.
WORKLOAD_ROLE_PATH = "/purchase-classifier/"
"""Every IAM role the program creates lives under this path (``role/purchase-classifier/<name>``):
the only roles the bootstrap program's ``ci-deployer`` may create."""
WORKLOAD_BOUNDARY_NAME = "ci-workload-boundary"
"""The permissions boundary every such role carries (created by the bootstrap program); ``ci-`` so
the deployer's deny on ``ci-*`` covers it."""


def workload_boundary_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:policy/{WORKLOAD_BOUNDARY_NAME}"


PREVIEW_GROUP = "purchase-classifier:preview"
"""The Kubernetes group of the preview identity (pull-request previews, drift checks): the ``ci-preview``
role's EKS access entry maps to it, and the program's read-only ClusterRole is bound to it."""
PREVIEW_REFRESH_EXCLUDES = ("**kubernetes:core/v1:Secret::**", "**kubernetes:helm.sh/v3:Release::**")
"""URN globs (``pulumi preview --refresh --exclude``) of what the preview group may not read: Secrets,
and Helm releases, which Helm keeps in Secrets."""

PREFIX_TRAINING = "training/"
PREFIX_MODELS = "models/"
PREFIX_PREDICTIONS = "predictions/"
