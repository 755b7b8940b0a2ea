"""Kubernetes versions the program supports, each with its pinned EKS addon versions."""

from __future__ import annotations

from pydantic import Field

from infra.schema.base import Model

_ADDON_VERSION_RE = r"^v\d+\.\d+\.\d+-eksbuild\.\d+$"


class AddonVersions(Model):
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
