"""Who can reach the cluster's API: a stack nobody can deploy to is refused before it is created."""

from __future__ import annotations

from infra.schema import Cluster


def api_access_problems(cluster: Cluster, prefix: str) -> list[str]:
    """An eks-mode cluster whose endpoint is private and admits no network (``python -m infra.reach``
    runs this too); ``privateAccess`` set where nothing reads it."""
    key = f"{prefix}cluster.privateAccess"
    if cluster.mode != "eks":
        if not cluster.private_access.empty:
            return [f"{key}: only used when cluster.mode is 'eks' (it opens the EKS cluster security group)"]
        return []
    if cluster.endpoint_public_access or not cluster.private_access.empty:
        return []
    return [
        f"{key}: the API endpoint is private (endpointPublicAccess: false) and privateAccess lists no CIDR and "
        "no security group, so nothing can reach it to deploy; list the deployer's network in "
        f"{key}.cidrs (a runner subnet, a VPN range) or {key}.securityGroupIds (a self-hosted runner's "
        "group), or open a public endpoint to publicAccessCidrs (docs/delivery.md)"
    ]
