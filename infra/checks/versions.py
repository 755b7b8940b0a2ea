"""Versions that change under running nodes: staging and prod roll nodes only when their file says so."""

from __future__ import annotations

from infra.schema import StackConfig

PINNED_ENVIRONMENTS = ("staging", "prod")
"""Environments whose nodes change only by a reviewed edit of their stack file."""


def ami_problems(cfg: StackConfig, prefix: str) -> list[str]:
    """A staging or prod eks stack whose Karpenter nodes float on ``al2023@latest``."""
    if not cfg.is_eks or cfg.environment not in PINNED_ENVIRONMENTS or cfg.cluster.node_ami_release != "latest":
        return []
    return [
        f"{prefix}cluster.nodeAmiRelease: got 'latest' in {cfg.environment}; a newly published AMI would "
        "replace every node at a time nobody chose. Pin a release (`v<YYYYMMDD>`, the one dev runs: "
        'docs/cluster.md, "Upgrading")'
    ]
