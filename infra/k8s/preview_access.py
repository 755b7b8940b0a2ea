"""What the preview identity may read in the cluster: every kind the program manages, except Secrets.

Pull-request previews and the daily drift check run code nobody has reviewed yet, with the
``ci-preview`` role. EKS's ``AmazonEKSAdminViewPolicy`` would let that code read the database URL
and the storage keys out of the Secrets; the built-in ``view`` role reads no Secrets but misses
cluster-scoped kinds the program manages (Karpenter's pools, ClusterRoles). So the program grants
its own read-only ClusterRole to :data:`~infra.naming.PREVIEW_GROUP`, the Kubernetes group the
preview role's EKS access entry maps to (any other cluster maps its preview identity the same way).

A refresh reads each object the state holds, so the drift check refreshes everything but the
Secrets and the Helm releases (Helm keeps a release, values included, in a Secret):
:data:`~infra.naming.PREVIEW_REFRESH_EXCLUDES`. A plain preview reads nothing from the cluster for
them (the provider diffs client-side when a server-side dry run is not allowed).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import Obj, namespace_labels
from infra.naming import PREVIEW_GROUP, PROJECT

READ = ["get", "list", "watch"]
PREVIEW_READS: dict[str, tuple[str, ...]] = {
    "": ("configmaps", "namespaces", "pods", "serviceaccounts", "services"),
    "apps": ("deployments", "replicasets"),
    "autoscaling": ("horizontalpodautoscalers",),
    "batch": ("cronjobs", "jobs"),
    "policy": ("poddisruptionbudgets",),
    "networking.k8s.io": ("networkpolicies",),
    "rbac.authorization.k8s.io": ("clusterrolebindings", "clusterroles"),
    "karpenter.sh": ("nodepools",),
    "karpenter.k8s.aws": ("ec2nodeclasses",),
    "monitoring.coreos.com": ("podmonitors", "prometheusrules", "servicemonitors"),
}
"""API group -> resources a refresh reads: those the program manages, and the Pods and ReplicaSets
the provider's readiness check of a Deployment or Job lists (without them a refreshed Deployment
previews as an update). ``secrets`` is deliberately absent, and RBAC only adds: nothing else grants
it to the group."""


def preview_role_name(stack: str) -> str:
    """Per stack: two stacks sharing a cluster (existing mode) each own theirs."""
    return f"{PROJECT}-{stack}-preview"


def build_preview_role(stack: str, instance: str) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": preview_role_name(stack), "labels": namespace_labels(instance)},
        "rules": [
            {"apiGroups": [group], "resources": list(kinds), "verbs": READ} for group, kinds in PREVIEW_READS.items()
        ],
    }


def build_preview_binding(stack: str, instance: str) -> Obj:
    name = preview_role_name(stack)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": namespace_labels(instance)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": PREVIEW_GROUP}],
    }


class PreviewAccess(pulumi.ComponentResource):
    """The preview group's ClusterRole and its binding."""

    def __init__(self, name: str, stack: str, instance: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("purchase-classifier:k8s:PreviewAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = build_preview_role(stack, instance)
        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-role", metadata=role["metadata"], rules=role["rules"], opts=child
        )
        binding = build_preview_binding(stack, instance)
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-binding",
            metadata=binding["metadata"],
            role_ref=binding["roleRef"],
            subjects=binding["subjects"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_role]),
        )
        self.register_outputs({})
