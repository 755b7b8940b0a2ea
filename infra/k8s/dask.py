"""The Dask cluster the train and predict jobs submit to: one scheduler, N workers.

Workers are a fixed ``replicas`` and Karpenter adds or removes Dask nodes to fit them; no CPU
autoscaler deletes a worker that holds results. A worker that goes anyway (rollout, node drain, spot
reclaim) first retires through the scheduler (its ``preStop`` hook), which copies the results only it
holds to the other workers before it exits: nothing is recomputed or lost.

Builders follow the ``dask/dask-kubernetes`` operator: pure ``build_*`` functions return plain
objects; :class:`DaskCluster` only registers them. Worker threads and memory limit are *derived* from
the container limits so the two can never disagree (a Dask memory limit above the container limit
means the kernel OOM-kills the worker before Dask spills or pauses).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import (
    DASK_CLIENTS,
    NANNY_PORT,
    NO_VOLUNTARY_DISRUPTION,
    SCHEDULER,
    SCHEDULER_DASHBOARD_PORT,
    SCHEDULER_PORT,
    WORKER,
    WORKER_DASHBOARD_PORT,
    WORKER_PORT,
    Context,
    Obj,
    component_selector,
    container,
    env_value,
    http_probe,
    labels,
    metadata,
    pod_spec,
    prometheus_ingress,
    selector_labels,
    storage_env,
    storage_secrets,
)
from infra.naming import (
    DASK_NODE_LABEL_KEY,
    DASK_NODE_LABEL_VALUE,
    DASK_TAINT_EFFECT,
    DASK_TAINT_KEY,
    DASK_TAINT_VALUE,
    SA_DASK_SCHEDULER,
    SA_DASK_WORKER,
)
from infra.quantity import MIB as _MIB
from infra.quantity import cpu_millicores, memory_bytes
from infra.schema import Resources
from infra.schema.workloads import worker_memory_limit

MEMORY_THRESHOLDS = {"TARGET": "0.60", "SPILL": "0.70", "PAUSE": "0.80", "TERMINATE": "0.95"}
"""Fractions of ``--memory-limit``: spill to ``/tmp`` at target/spill, stop new tasks at pause, and
let the nanny restart the worker at terminate, all before the container limit is reached."""

WORKER_TERMINATION_GRACE_SECONDS = 120
"""Time to retire (hand results to other workers) before the kubelet kills the pod: AWS gives a spot
instance two minutes' notice, and Karpenter drains it as soon as the notice arrives."""

RETIRE_SCRIPT = """\
import os, sys
from distributed import Client

with Client(sys.argv[1], timeout=10) as client:
    client.retire_workers(names=[os.environ["POD_NAME"]], close_workers=True)
"""
"""The workers' ``preStop``: ask the scheduler to retire this worker (by its name, the pod name).
The scheduler copies every result held only here to another worker, then closes this one."""

SCHEDULER_ARGS = [
    "dask",
    "scheduler",
    "--port",
    str(SCHEDULER_PORT),
    "--dashboard-address",
    f":{SCHEDULER_DASHBOARD_PORT}",
]


def worker_threads(res: Resources) -> int:
    """One thread per whole CPU of the limit (at least one): more threads than CPUs only contend."""
    return max(1, cpu_millicores(res.limits.cpu) // 1000)


def worker_args(ctx: Context) -> list[str]:
    res = ctx.workloads.dask.workers.resources
    return [
        "dask",
        "worker",
        ctx.scheduler_address,
        "--nthreads",
        str(worker_threads(res)),
        "--memory-limit",
        worker_memory_limit(res),
        "--name",
        "$(POD_NAME)",
        "--local-directory",
        "/tmp",
        "--worker-port",
        str(WORKER_PORT),
        "--nanny-port",
        str(NANNY_PORT),
        "--dashboard-address",
        f":{WORKER_DASHBOARD_PORT}",
    ]


def retire_command(ctx: Context) -> list[str]:
    """The ``preStop`` exec command: :data:`RETIRE_SCRIPT` against this cluster's scheduler."""
    return ["python", "-c", RETIRE_SCRIPT, ctx.scheduler_address]


def build_scheduler_deployment(ctx: Context) -> Obj:
    res = ctx.workloads.dask.scheduler.resources
    main = container(
        ctx,
        "scheduler",
        SCHEDULER_ARGS,
        res,
        ports=[
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": SCHEDULER_DASHBOARD_PORT, "protocol": "TCP"},
        ],
        readiness=http_probe("/health", "http-dashboard", initial_delay=5, period=10),
        liveness=http_probe("/health", "http-dashboard", initial_delay=15, period=20, failure_threshold=6),
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, SCHEDULER, SCHEDULER),
        "spec": {
            "replicas": 1,
            # Two schedulers side by side would split the workers between them: replace, never surge.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(ctx, SCHEDULER)},
            "template": {
                # Its state (the task graph of a running job) lives only in this pod: Karpenter never
                # moves it to consolidate or replace a node (the PDB below stops drains too).
                "metadata": {"labels": labels(ctx, SCHEDULER), "annotations": dict(NO_VOLUNTARY_DISRUPTION)},
                "spec": pod_spec([main], SA_DASK_SCHEDULER),
            },
        },
    }


def build_scheduler_pdb(ctx: Context) -> Obj:
    """No voluntary eviction of the one scheduler (a drain waits until it is rolled between jobs)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ctx, SCHEDULER, SCHEDULER),
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": selector_labels(ctx, SCHEDULER)}},
    }


def build_scheduler_service(ctx: Context) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, SCHEDULER, SCHEDULER),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ctx, SCHEDULER),
            "ports": [
                {"name": "tcp-comm", "port": SCHEDULER_PORT, "targetPort": "tcp-comm", "protocol": "TCP"},
                {
                    "name": "http-dashboard",
                    "port": SCHEDULER_DASHBOARD_PORT,
                    "targetPort": "http-dashboard",
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_worker_deployment(ctx: Context) -> Obj:
    workers = ctx.workloads.dask.workers
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *(env_value(f"DASK_DISTRIBUTED__WORKER__MEMORY__{k}", v) for k, v in MEMORY_THRESHOLDS.items()),
        *storage_env(ctx),
    ]
    main = container(
        ctx,
        "worker",
        worker_args(ctx),
        workers.resources,
        env=env,
        secrets=storage_secrets(ctx),
        ports=[
            {"name": "tcp-worker", "containerPort": WORKER_PORT, "protocol": "TCP"},
            {"name": "tcp-nanny", "containerPort": NANNY_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"},
        ],
        readiness=http_probe("/health", "http-dashboard", initial_delay=5, period=10),
        liveness=http_probe("/health", "http-dashboard", initial_delay=30, period=20, failure_threshold=6),
    )
    extra: Obj = {
        "tolerations": [
            {
                "key": DASK_TAINT_KEY,
                "operator": "Equal",
                "value": DASK_TAINT_VALUE,
                "effect": DASK_TAINT_EFFECT,
            }
        ],
    }
    if ctx.dask_node_pool:
        extra["nodeSelector"] = {DASK_NODE_LABEL_KEY: DASK_NODE_LABEL_VALUE}
    main["lifecycle"] = {"preStop": {"exec": {"command": retire_command(ctx)}}}
    spill = 2 * memory_bytes(workers.resources.limits.memory) // _MIB
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, WORKER, WORKER),
        "spec": {
            "replicas": workers.replicas,
            "selector": {"matchLabels": selector_labels(ctx, WORKER)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(ctx, WORKER)},
                # Spilled partitions land in /tmp: room for twice the memory limit.
                "spec": pod_spec(
                    [main],
                    SA_DASK_WORKER,
                    termination_grace=WORKER_TERMINATION_GRACE_SECONDS,
                    tmp_size=f"{spill}Mi",
                    **extra,
                ),
            },
        },
    }


def build_worker_pdb(ctx: Context) -> Obj:
    """At most one worker evicted at a time by drains, so the others have room for its results."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ctx, WORKER, WORKER),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(ctx, WORKER)}},
    }


def _tcp(*ports: int) -> list[Obj]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def build_network_policies(ctx: Context) -> list[Obj]:
    """Only workers and the train/predict jobs reach the scheduler; only the cluster's own members
    (scheduler, workers, those jobs) reach the workers; Prometheus, when monitoring is enabled,
    reaches only the dashboard ports that serve ``/metrics``."""

    def peers(*components: str) -> list[Obj]:
        return [{"podSelector": component_selector(list(components))}]

    def policy(name: str, component: tuple[str, ...], spec: Obj) -> Obj:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(ctx, name, component[0] if len(component) == 1 else "dask-client"),
            "spec": {"podSelector": component_selector(list(component)), **spec},
        }

    worker_ports = _tcp(WORKER_PORT, NANNY_PORT)
    return [
        policy(
            SCHEDULER,
            (SCHEDULER,),
            {
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": peers(WORKER, *DASK_CLIENTS), "ports": _tcp(SCHEDULER_PORT)},
                    *prometheus_ingress(ctx, SCHEDULER_DASHBOARD_PORT),
                ],
                "egress": [{"to": peers(WORKER), "ports": worker_ports}],
            },
        ),
        policy(
            WORKER,
            (WORKER,),
            {
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": peers(SCHEDULER, WORKER, *DASK_CLIENTS), "ports": worker_ports},
                    *prometheus_ingress(ctx, WORKER_DASHBOARD_PORT),
                ],
                "egress": [
                    {"to": peers(SCHEDULER), "ports": _tcp(SCHEDULER_PORT)},
                    {"to": peers(WORKER), "ports": worker_ports},
                ],
            },
        ),
        policy(
            "dask-clients",
            DASK_CLIENTS,
            {
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": peers(SCHEDULER), "ports": _tcp(SCHEDULER_PORT)},
                    {"to": peers(WORKER), "ports": worker_ports},
                ],
            },
        ),
    ]


NETWORK_POLICY_NAMES = (SCHEDULER, WORKER, "dask-clients")
"""Names of :func:`build_network_policies`' objects, in order (resource names must be known early)."""


def _network_policy(index: int, ctx: Context) -> Obj:
    return build_network_policies(ctx)[index]


class DaskCluster(pulumi.ComponentResource):
    """Scheduler Deployment and Service, workers Deployment, PDB, NetworkPolicies.

    :param ctx: resolved per-stack values (the image reference and bucket are outputs upstream).
    """

    def __init__(
        self,
        name: str,
        ctx: pulumi.Output[Context],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:k8s:DaskCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def obj(builder: Callable[[Context], Obj | None]) -> pulumi.Output[Obj]:
            return ctx.apply(builder)  # type: ignore[arg-type]

        scheduler = obj(build_scheduler_deployment)
        k8s.apps.v1.Deployment(f"{name}-scheduler", metadata=scheduler["metadata"], spec=scheduler["spec"], opts=child)
        scheduler_pdb = obj(build_scheduler_pdb)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-scheduler", metadata=scheduler_pdb["metadata"], spec=scheduler_pdb["spec"], opts=child
        )
        service = obj(build_scheduler_service)
        k8s.core.v1.Service(f"{name}-scheduler", metadata=service["metadata"], spec=service["spec"], opts=child)
        workers = obj(build_worker_deployment)
        k8s.apps.v1.Deployment(f"{name}-workers", metadata=workers["metadata"], spec=workers["spec"], opts=child)
        pdb = obj(build_worker_pdb)
        k8s.policy.v1.PodDisruptionBudget(f"{name}-workers", metadata=pdb["metadata"], spec=pdb["spec"], opts=child)
        for index, policy_name in enumerate(NETWORK_POLICY_NAMES):
            policy = ctx.apply(partial(_network_policy, index))
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy_name}", metadata=policy["metadata"], spec=policy["spec"], opts=child
            )
        self.scheduler_address: pulumi.Output[str] = ctx.apply(lambda c: c.scheduler_address)
        self.register_outputs({"schedulerAddress": self.scheduler_address})
