"""What the Dask workers' resources must leave for the worker process itself.

The rule is :func:`infra.schema.workloads.worker_memory_limit`, which :mod:`infra.k8s.dask` also takes
the worker's ``--memory-limit`` from: checked here when the config is parsed, before any resource.
"""

from __future__ import annotations

from infra.schema import StackConfig
from infra.schema.workloads import worker_memory_limit


def worker_problems(cfg: StackConfig, prefix: str) -> list[str]:
    """A worker memory limit too small for the nanny's headroom plus a working worker."""
    try:
        worker_memory_limit(cfg.workloads.dask.workers.resources)
    except ValueError as exc:
        return [f"{prefix}workloads.dask.{exc}"]
    return []
