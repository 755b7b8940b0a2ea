"""Checks over a parsed stack config (layer 2 of ``infra/``): rules that read several parts of the
config, or facts beyond it (the region, what a node can hold). Each is a function from the parsed
config to messages that name full keys; :func:`infra.config.parse_config` runs :func:`problems`.
"""

from __future__ import annotations

from infra.checks.access import api_access_problems
from infra.checks.capacity import capacity_problems
from infra.checks.versions import ami_problems
from infra.checks.workers import worker_problems
from infra.checks.zones import zone_problems
from infra.schema import StackConfig


def problems(cfg: StackConfig, *, aws_region: str | None, prefix: str) -> list[str]:
    """Every check's messages, in a stable order; ``prefix`` is the config namespace."""
    return [
        *zone_problems(cfg, aws_region, prefix),
        *api_access_problems(cfg.cluster, prefix),
        *ami_problems(cfg, prefix),
        *capacity_problems(cfg, prefix),
        *worker_problems(cfg, prefix),
    ]
