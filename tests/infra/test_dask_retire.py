"""The Dask workers' ``preStop`` command, run for real against a real scheduler and workers.

The worker Deployment's ``preStop`` runs :data:`infra.k8s.dask.RETIRE_SCRIPT` with the scheduler
address before the kubelet stops the pod. Here a scheduler and two named workers run on 127.0.0.1,
a result lives only on the worker named like the stopping pod, and the exact command from the
manifest runs as a subprocess: the worker must leave the cluster and its result must survive on the
other worker, so a rollout, a node drain or a spot reclaim loses no work.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from distributed import Client, Scheduler, Worker

from infra.k8s import dask
from tests.infra.test_k8s_builders import make_ctx


def _prestop_command(scheduler_address: str) -> list[str]:
    """The manifest's command with the in-cluster scheduler address swapped for the local one."""
    ctx = make_ctx("dev")
    pod = dask.build_worker_deployment(ctx)["spec"]["template"]["spec"]
    command = list(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
    assert command[-1] == ctx.scheduler_address
    command[0] = sys.executable  # the image's `python`
    return [*command[:-1], scheduler_address]


async def _retire_one_of_two() -> tuple[int, str, set[str], bool, list[int]]:
    async with (
        Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as scheduler,
        Worker(scheduler.address, name="dask-worker-a", nthreads=1) as leaving,
        Worker(scheduler.address, name="dask-worker-b", nthreads=1) as staying,
        Client(scheduler.address, asynchronous=True) as client,
    ):
        # Scattered data has no task to recompute it from: if the worker left without handing it
        # over, it would be gone, not silently recomputed.
        (result,) = await client.scatter([[20, 22]], workers=[leaving.address])
        assert result.key in leaving.data and result.key not in staying.data
        proc = await asyncio.create_subprocess_exec(
            *_prestop_command(scheduler.address),
            env=os.environ | {"POD_NAME": "dask-worker-a"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        names = {ws.name for ws in scheduler.workers.values()}
        handed_over = result.key in staying.data
        return proc.returncode, stderr.decode(), names, handed_over, await result


def test_prestop_retires_the_worker_and_keeps_its_results() -> None:
    returncode, stderr, remaining, handed_over, value = asyncio.run(_retire_one_of_two())
    assert returncode == 0, stderr
    assert remaining == {"dask-worker-b"}
    assert handed_over and value == [20, 22]


def test_the_scheduler_is_never_moved_voluntarily() -> None:
    """Karpenter does not consolidate or drift-replace its node, and drains do not evict it: its state
    (a running job's task graph) exists nowhere else."""
    ctx = make_ctx("dev")
    template = dask.build_scheduler_deployment(ctx)["spec"]["template"]
    assert template["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    pdb = dask.build_scheduler_pdb(ctx)
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


async def _job_while_a_worker_is_removed() -> tuple[int, int, set[str]]:
    """A job of many tasks runs on two workers; mid-job, the manifest's preStop retires one (what a
    consolidation or drain of a Dask node does). The job must finish with the right answer."""
    async with (
        Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as scheduler,
        Worker(scheduler.address, name="dask-worker-a", nthreads=2),
        Worker(scheduler.address, name="dask-worker-b", nthreads=2),
        Client(scheduler.address, asynchronous=True) as client,
    ):

        def slow_square(x: int) -> int:
            import time

            time.sleep(0.05)
            return x * x

        futures = client.map(slow_square, range(200), pure=False)
        total = client.submit(sum, futures)
        await asyncio.sleep(0.5)  # the job is under way on both workers
        assert not total.done()
        proc = await asyncio.create_subprocess_exec(
            *_prestop_command(scheduler.address),
            env=os.environ | {"POD_NAME": "dask-worker-a"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, stderr.decode()
        result = await asyncio.wait_for(total, timeout=120)
        return result, sum(x * x for x in range(200)), {ws.name for ws in scheduler.workers.values()}


def test_a_job_survives_a_worker_being_removed() -> None:
    result, expected, remaining = asyncio.run(_job_while_a_worker_is_removed())
    assert result == expected
    assert remaining == {"dask-worker-b"}
