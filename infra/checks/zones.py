"""Availability zones against the region the stack deploys to."""

from __future__ import annotations

from infra.schema import StackConfig


def zone_problems(cfg: StackConfig, aws_region: str | None, prefix: str) -> list[str]:
    """Zones outside ``aws:region``, and an eks-mode stack without a region."""
    problems = []
    if aws_region and cfg.network is not None:
        for zone in cfg.network.availability_zones:
            if not zone.startswith(aws_region):
                problems.append(f"{prefix}network.availabilityZones: got {zone!r}; not in aws:region {aws_region!r}")
    if cfg.is_eks and not aws_region:
        problems.append("aws:region: required key is missing (eks mode creates AWS resources)")
    return problems
