"""The typed stack config, by concern (layer 1 of ``infra/``: pydantic only, no Pulumi).

Every key under the ``purchase-classifier:`` namespace of a ``Pulumi.<stack>.yaml`` has a model
field here; field descriptions double as the documentation (the configuration table in
docs/platform.md is generated from them by ``python -m infra.config``). Model validators hold the
rules about one model's own keys; rules that read several parts of a parsed config live in
:mod:`infra.checks`, and :func:`infra.config.parse_config` runs both.

- :mod:`~infra.schema.base`: the base model, constrained strings, CPU/memory quantities
- :mod:`~infra.schema.workloads`: Dask, serving, CronJobs, monitoring
- :mod:`~infra.schema.platform`: cluster, node pools, network, storage, registry, protection
- :mod:`~infra.schema.versions`: supported Kubernetes versions and their addon versions
- :mod:`~infra.schema.stack`: :class:`StackConfig`, the whole stack file
"""

from __future__ import annotations

from infra.schema.base import Quantities
from infra.schema.platform import Cluster, Ecr, Network, NodePool, NodePools, Protection, Storage, SystemNodes
from infra.schema.stack import SECRET_KEYS, StackConfig
from infra.schema.versions import DEFAULT_CLUSTER_VERSION, SUPPORTED_CLUSTER_VERSIONS, AddonVersions
from infra.schema.workloads import (
    Autoscaling,
    CronJob,
    Dask,
    DaskScheduler,
    DaskWorkers,
    Jobs,
    Monitoring,
    Resources,
    Serving,
    Workloads,
)

__all__ = [
    "DEFAULT_CLUSTER_VERSION",
    "SECRET_KEYS",
    "SUPPORTED_CLUSTER_VERSIONS",
    "AddonVersions",
    "Autoscaling",
    "Cluster",
    "CronJob",
    "Dask",
    "DaskScheduler",
    "DaskWorkers",
    "Ecr",
    "Jobs",
    "Monitoring",
    "Network",
    "NodePool",
    "NodePools",
    "Protection",
    "Quantities",
    "Resources",
    "Serving",
    "StackConfig",
    "Storage",
    "SystemNodes",
    "Workloads",
]
