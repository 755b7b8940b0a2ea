"""Facts shared across layers of ``infra/``: AWS and chart values the schema validates against, the
capacity check counts with, and the components declare.

Plain data only (no pydantic, no Pulumi), so every layer may import it.
"""

from __future__ import annotations

from typing import Any

LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653)
"""The retention values CloudWatch Logs accepts."""
INTERFACE_ENDPOINT_SERVICES = ("ecr.api", "ecr.dkr", "sts", "logs", "ec2", "elasticloadbalancing")

ADDON_NAMES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent", "coredns", "aws-ebs-csi-driver", "metrics-server")
"""EKS managed addons every eks-mode cluster runs (metrics-server: the HPAs' resource metrics)."""

GIB_PER_VCPU = {"c": 2, "m": 4, "r": 8}
"""Memory per vCPU of the EC2 instance categories a node pool may use (compute, general, memory)."""
INSTANCE_CPU_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 36, 48, 64, 72, 96, 128, 192)
"""vCPU counts EC2 sizes come in (c, m and r families); a pool's range selects from these."""


def instance_cpu_sizes(min_cpu: int, max_cpu: int) -> list[int]:
    """The EC2 vCPU sizes from ``min_cpu`` to ``max_cpu``."""
    return [c for c in INSTANCE_CPU_SIZES if min_cpu <= c <= max_cpu]


_MANAGED = "arn:aws:iam::aws:policy/"
NODE_POLICIES = (
    f"{_MANAGED}AmazonEKSWorkerNodePolicy",
    f"{_MANAGED}AmazonEKS_CNI_Policy",
    f"{_MANAGED}AmazonEC2ContainerRegistryPullOnly",
    f"{_MANAGED}AmazonSSMManagedInstanceCore",
)
"""Managed policies of every node role, system group and Karpenter's (SSM: shell access to nodes
without SSH keys)."""

PROMETHEUS_STACK_RELEASE = "kube-prometheus-stack"
"""Helm release name of the operator stack ``workloads.monitoring.install`` installs; its Prometheus
selects monitors and rules labelled ``release: <this>``."""

PROMETHEUS_STACK_RESOURCES: dict[str, dict[str, Any]] = {
    # Prometheus: a few thousand series per node (kubelet, cAdvisor, kube-state-metrics) plus ours.
    "prometheus": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "operator": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    "webhook-job": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
    "alertmanager": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
    "grafana": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    "grafana-sidecar": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
    "kube-state-metrics": {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"},
    },
}
"""Requests and limits of every pod the kube-prometheus-stack chart runs (:mod:`infra.k8s.prometheus_stack`
sets them, the capacity check counts them on the general pool)."""
