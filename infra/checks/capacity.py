"""Will the pods fit? Requested CPU and memory per Karpenter pool against what the pool may launch.

Karpenter launches whatever node a pending pod needs, within its NodePool's instance requirements
and limits, so a pod that no allowed instance can hold stays Pending forever, and a pool whose
limits are too small for its pods at full scale stops short. Both are found here, at config time,
with the keys to change named. A node's usable share is its *allocatable* (capacity minus what the
kubelet, the OS and the hypervisor keep, as EKS and Karpenter compute it) minus the DaemonSets that
run on every node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infra.catalog import GIB_PER_VCPU, PROMETHEUS_STACK_RESOURCES, instance_cpu_sizes
from infra.quantity import GIB as _GIB
from infra.quantity import MIB as _MIB
from infra.quantity import cpu_millicores, memory_bytes
from infra.schema import NodePool, Resources, StackConfig

MAX_PODS = 110
"""Pods per node assumed for the kubelet's memory reservation (11 MiB each + 255 MiB): Karpenter's
upper bound, so the reservation is over- rather than under-estimated."""
EVICTION_THRESHOLD = 100 * _MIB
"""The kubelet's default ``memory.available`` hard eviction threshold."""
VM_MEMORY_OVERHEAD = 0.075
"""Karpenter's default ``vmMemoryOverheadPercent``: memory EC2 advertises but the OS never sees."""
DAEMONSET_REQUESTS: dict[str, tuple[str, str]] = {
    "aws-node": ("50m", "64Mi"),
    "kube-proxy": ("100m", "64Mi"),
    "eks-pod-identity-agent": ("25m", "64Mi"),
    "ebs-csi-node": ("30m", "128Mi"),
}
"""Requests of the DaemonSets every node runs (the pinned addons), rounded up; re-check them with
``kubectl describe node`` (Allocated resources) after an addon upgrade."""


def kube_reserved_cpu_millicores(vcpus: int) -> int:
    """EKS's CPU reservation: 6% of the first core, 1% of the second, 0.5% of the next two, 0.25% above."""
    reserved = 60.0 + 10.0 * min(max(vcpus - 1, 0), 1) + 5.0 * min(max(vcpus - 2, 0), 2) + 2.5 * max(vcpus - 4, 0)
    return math.ceil(reserved)


@dataclass(frozen=True)
class NodeShape:
    """The largest node a pool may launch and what pods may request on it."""

    vcpus: int
    memory: int
    """Bytes, as EC2 advertises."""
    cpu_for_pods: int
    """Millicores left for the pool's pods: allocatable minus DaemonSets."""
    memory_for_pods: int
    """Bytes left for the pool's pods."""


def largest_node(pool: NodePool) -> NodeShape:
    """The biggest instance the pool's requirements allow (most vCPUs, most memory per vCPU)."""
    sizes = instance_cpu_sizes(pool.min_instance_cpu, pool.max_instance_cpu)
    if not sizes:
        raise ValueError(f"instance sizes {pool.min_instance_cpu}..{pool.max_instance_cpu} vCPUs include no EC2 size")
    vcpus = sizes[-1]
    memory = vcpus * max(GIB_PER_VCPU[c] for c in pool.instance_categories) * _GIB
    daemon_cpu = sum(cpu_millicores(cpu) for cpu, _ in DAEMONSET_REQUESTS.values())
    daemon_memory = sum(memory_bytes(mem) for _, mem in DAEMONSET_REQUESTS.values())
    kube_reserved_memory = (11 * MAX_PODS + 255) * _MIB
    usable_memory = int(memory * (1 - VM_MEMORY_OVERHEAD))
    return NodeShape(
        vcpus=vcpus,
        memory=memory,
        cpu_for_pods=vcpus * 1000 - kube_reserved_cpu_millicores(vcpus) - daemon_cpu,
        memory_for_pods=usable_memory - kube_reserved_memory - EVICTION_THRESHOLD - daemon_memory,
    )


@dataclass(frozen=True)
class PodGroup:
    """Identical pods of one workload: how many at minimum and maximum scale, and their requests."""

    key: str
    """Config key of the workload (``workloads.dask.workers``)."""
    replicas_key: str
    """Config key(s) that set the count, for messages."""
    resources: Resources
    min_count: int
    max_count: int

    @property
    def cpu(self) -> int:
        return cpu_millicores(self.resources.requests.cpu)

    @property
    def memory(self) -> int:
        return memory_bytes(self.resources.requests.memory)


def pool_pods(cfg: StackConfig) -> dict[str, list[PodGroup]]:
    """The pods each pool must hold; jobs count at maximum scale as if all three ran at once, and the
    Prometheus Operator stack's pods (``workloads.monitoring.install``) on the general pool."""
    w = cfg.workloads
    jobs = [
        PodGroup(f"workloads.jobs.{name}", f"workloads.jobs.{name}", getattr(w.jobs, name).resources, 0, 1)
        for name in ("refresh", "train", "predict")
    ]
    monitoring = [
        PodGroup(
            f"workloads.monitoring.install ({pod})",
            "workloads.monitoring.install",
            Resources.model_validate(resources),
            1,
            1,
        )
        for pod, resources in PROMETHEUS_STACK_RESOURCES.items()
        if w.monitoring.install
    ]
    return {
        "dask": [
            PodGroup(
                "workloads.dask.workers", "workloads.dask.workers.replicas", w.dask.workers.resources,
                w.dask.workers.replicas, w.dask.workers.replicas,
            )
        ],
        "general": [
            PodGroup("workloads.dask.scheduler", "workloads.dask.scheduler", w.dask.scheduler.resources, 1, 1),
            PodGroup(
                "workloads.serving", "workloads.serving.autoscaling.maxReplicas", w.serving.resources,
                w.serving.autoscaling.min_replicas, w.serving.autoscaling.max_replicas,
            ),
            *jobs,
            *monitoring,
        ],
    }  # fmt: skip


def nodes_needed(groups: list[PodGroup], node: NodeShape, scale: str) -> int:
    """Nodes of ``node``'s shape that hold every pod at ``scale`` (``min``/``max``): first fit,
    largest pods first (what the scheduler's spreading can at best achieve)."""
    pods = sorted(
        ((g.cpu, g.memory) for g in groups for _ in range(g.min_count if scale == "min" else g.max_count)),
        reverse=True,
    )
    free: list[list[int]] = []
    for cpu, memory in pods:
        for room in free:
            if room[0] >= cpu and room[1] >= memory:
                room[0] -= cpu
                room[1] -= memory
                break
        else:
            free.append([node.cpu_for_pods - cpu, node.memory_for_pods - memory])
    return len(free)


def nodes_allowed(pool: NodePool, node: NodeShape) -> int:
    """How many of the largest nodes the pool's ``limits`` let Karpenter launch."""
    return min(cpu_millicores(pool.limits.cpu) // (node.vcpus * 1000), memory_bytes(pool.limits.memory) // node.memory)


@dataclass(frozen=True)
class PoolCapacity:
    """One row of the render summary."""

    pool: str
    node: NodeShape
    nodes_allowed: int
    requested_min: tuple[int, int]
    """(millicores, bytes) at minimum scale."""
    requested_max: tuple[int, int]
    nodes_needed_max: int

    @property
    def provided(self) -> tuple[int, int]:
        return self.nodes_allowed * self.node.cpu_for_pods, self.nodes_allowed * self.node.memory_for_pods


def capacity_report(cfg: StackConfig) -> list[PoolCapacity]:
    """Per pool: requests at minimum and maximum scale and what the pool may provide."""
    assert cfg.cluster.node_pools is not None  # eks mode, validated
    rows = []
    for pool_name, groups in pool_pods(cfg).items():
        pool: NodePool = getattr(cfg.cluster.node_pools, pool_name)
        node = largest_node(pool)

        def total(scale: str, groups: list[PodGroup] = groups) -> tuple[int, int]:
            counts = [(g, g.min_count if scale == "min" else g.max_count) for g in groups]
            return sum(g.cpu * n for g, n in counts), sum(g.memory * n for g, n in counts)

        rows.append(
            PoolCapacity(
                pool_name,
                node,
                nodes_allowed(pool, node),
                total("min"),
                total("max"),
                nodes_needed(groups, node, "max"),
            )
        )
    return rows


def capacity_problems(cfg: StackConfig, prefix: str) -> list[str]:
    """Why the stack's pods cannot all be scheduled (empty when they can); ``prefix`` is the config
    namespace, so each message names full keys."""
    if not cfg.is_eks or cfg.cluster.node_pools is None:
        return []
    problems = []
    for pool_name, groups in pool_pods(cfg).items():
        pool: NodePool = getattr(cfg.cluster.node_pools, pool_name)
        pool_key = f"{prefix}cluster.nodePools.{pool_name}"
        try:
            node = largest_node(pool)
        except ValueError as exc:
            problems.append(f"{pool_key}.minInstanceCpu/maxInstanceCpu: {exc}")
            continue
        shape = (
            f"{node.vcpus} vCPU / {node.memory // _GIB} GiB "
            f"({node.cpu_for_pods}m and {_gib(node.memory_for_pods)} for pods)"
        )
        too_big = False
        for g in groups:
            if g.cpu > node.cpu_for_pods or g.memory > node.memory_for_pods:
                too_big = True
                problems.append(
                    f"{prefix}{g.key}.resources.requests: {g.resources.requests.cpu} CPU / "
                    f"{g.resources.requests.memory} cannot fit the largest node {pool_key} may launch, "
                    f"{shape}; lower the requests or raise {pool_key}.maxInstanceCpu"
                )
        if too_big:
            continue
        needed, allowed = nodes_needed(groups, node, "max"), nodes_allowed(pool, node)
        if needed > allowed:
            keys = ", ".join(f"{prefix}{g.replicas_key}" for g in groups if g.max_count)
            problems.append(
                f"{pool_key}.limits: at maximum scale its pods need {needed} node(s) of {shape}, the limits "
                f"({pool.limits.cpu} CPU, {pool.limits.memory}) allow {allowed}; raise {pool_key}.limits or "
                f"{pool_key}.maxInstanceCpu, or lower {keys}"
            )
    return problems


def _gib(value: int) -> str:
    return f"{value / _GIB:.1f} GiB"


def capacity_markdown(cfg: StackConfig) -> str:
    """The render summary's capacity table."""
    lines = [
        "| pool | largest node (for pods) | nodes allowed | requested at min scale | requested at max scale "
        "| pool may provide |",
        "|---|---|---|---|---|---|",
    ]
    for row in capacity_report(cfg):
        n = row.node
        lines.append(
            f"| {row.pool} | {n.vcpus} vCPU / {n.memory // _GIB} GiB ({n.cpu_for_pods}m, {_gib(n.memory_for_pods)}) "
            f"| {row.nodes_allowed} | {row.requested_min[0]}m, {_gib(row.requested_min[1])} "
            f"| {row.requested_max[0]}m, {_gib(row.requested_max[1])} ({row.nodes_needed_max} node(s)) "
            f"| {row.provided[0]}m, {_gib(row.provided[1])} |"
        )
    return "\n".join(lines) + "\n"
