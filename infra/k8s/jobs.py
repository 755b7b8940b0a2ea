"""The pipeline's CronJobs: ``refresh`` (DB → snapshot), ``train`` and ``predict`` (on Dask).

A run that overlaps the previous one would race it on the same snapshot or model pointer, so
``concurrencyPolicy: Forbid``; a run that could not start in time is skipped rather than piled up;
only infrastructure failures retry (``podFailurePolicy``, up to ``backoffLimit`` times) and a hung run
is killed at ``activeDeadlineSeconds``. Jobs never restart in place (``restartPolicy: Never``): a
retry is a fresh pod with clean ``/tmp``.
"""

from __future__ import annotations

from functools import partial

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import (
    DASK_CLIENTS,
    DATABASE_SECRET,
    JOBS,
    NO_VOLUNTARY_DISRUPTION,
    Context,
    Obj,
    container,
    database_env,
    env_value,
    labels,
    metadata,
    pod_spec,
    storage_env,
    storage_secrets,
)
from infra.naming import SA_PREDICT, SA_REFRESH, SA_TRAIN
from infra.schema import CronJob
from infra.schema import Jobs as JobsConfig
from ml.errors import ExitCode

JOB_ARGS: dict[str, list[str]] = {
    "refresh": ["refresh"],
    "train": ["train", "--snapshot", "latest"],
    "predict": ["predict"],
}
"""``python -m ml`` arguments per job (the image's ENTRYPOINT supplies ``python -m ml``)."""

SERVICE_ACCOUNT = {"refresh": SA_REFRESH, "train": SA_TRAIN, "predict": SA_PREDICT}

HISTORY_LIMITS = {"successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3}
TIME_ZONE = "Etc/UTC"


NON_RETRIABLE_EXIT_CODES = (ExitCode.BAD_INPUT, ExitCode.GATE_REJECTED, ExitCode.NOT_FOUND)
"""Running again gives the same answer: the Job fails at once instead of burning its retries."""


def pod_failure_policy(job: str) -> Obj:
    """Fail the Job at once on bad input, a rejected model or nothing to do; count infrastructure
    failures (exit 4) against ``backoffLimit``; and never count a pod evicted by a node drain
    (Karpenter consolidation, spot reclaim, upgrade), which is retried for free."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": job,
                    "operator": "In",
                    "values": [int(c) for c in NON_RETRIABLE_EXIT_CODES],
                },
            },
            {
                "action": "Count",
                "onExitCodes": {"containerName": job, "operator": "In", "values": [int(ExitCode.INFRASTRUCTURE)]},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def job_env(ctx: Context, job: str) -> list[Obj]:
    env = [*storage_env(ctx), *database_env()]
    if job in DASK_CLIENTS:
        env.append(env_value("DASK_SCHEDULER_ADDRESS", ctx.scheduler_address))
    return env


def job_config(ctx: Context, job: str) -> CronJob:
    cfg: CronJob = getattr(ctx.workloads.jobs, job)
    return cfg


def build_cronjob(ctx: Context, job: str) -> Obj:
    if job not in JOB_ARGS:
        raise ValueError(f"unknown job {job!r}; one of {', '.join(JOBS)}")
    cfg = job_config(ctx, job)
    secrets = [*storage_secrets(ctx), DATABASE_SECRET]
    main = container(ctx, job, JOB_ARGS[job], cfg.resources, env=job_env(ctx, job), secrets=secrets)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(ctx, job, job),
        "spec": {
            "schedule": cfg.schedule,
            "timeZone": TIME_ZONE,
            "suspend": cfg.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": cfg.starting_deadline_seconds,
            **HISTORY_LIMITS,
            "jobTemplate": {
                "metadata": {"labels": labels(ctx, job)},
                "spec": {
                    "backoffLimit": cfg.backoff_limit,
                    "podFailurePolicy": pod_failure_policy(job),
                    "activeDeadlineSeconds": cfg.active_deadline_seconds,
                    "ttlSecondsAfterFinished": cfg.ttl_seconds_after_finished,
                    "template": {
                        "metadata": {"labels": labels(ctx, job), "annotations": dict(NO_VOLUNTARY_DISRUPTION)},
                        "spec": pod_spec([main], SERVICE_ACCOUNT[job], restart_policy="Never"),
                    },
                },
            },
        },
    }


def _cronjob(job: str, ctx: Context) -> Obj:
    return build_cronjob(ctx, job)


class Jobs(pulumi.ComponentResource):
    """The three CronJobs; their ServiceAccounts come from :class:`~infra.k8s.namespace.Namespace`."""

    def __init__(self, name: str, ctx: pulumi.Output[Context], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("purchase-classifier:k8s:Jobs", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        for job in JOBS:
            cron = ctx.apply(partial(_cronjob, job))
            k8s.batch.v1.CronJob(f"{name}-{job}", metadata=cron["metadata"], spec=cron["spec"], opts=child)
        self.register_outputs({"jobs": list(JOBS)})


BOOTSTRAP_JOBS = ("refresh", "train")
"""What the first ``pulumi up`` of an environment runs once, in this order, before the serving
Deployment: serving is ready only once a model exists, and the train CronJob's first run may be a
day away, so without them the first rollout could never become available."""


def build_bootstrap_job(ctx: Context, job: str) -> Obj:
    """One run of ``job``'s CronJob template, named ``bootstrap-<job>``, with the CronJob's labels
    (so its network policies and identity apply). It is kept once finished (no TTL): it records the
    environment's first run, and a Job that vanished would be created (and run) again."""
    template = build_cronjob(ctx, job)["spec"]["jobTemplate"]
    spec = {k: v for k, v in template["spec"].items() if k != "ttlSecondsAfterFinished"}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(ctx, f"bootstrap-{job}", job), "spec": spec}


class Bootstrap(pulumi.ComponentResource):
    """The environment's first refresh and training run, after ``after`` (namespace objects, Dask).

    pulumi-kubernetes waits for a Job to complete, so whatever depends on :attr:`done` (the serving
    Deployment) is created once a model exists. Created once: ``spec`` changes (a new image, new
    settings) are ignored, so a promotion neither replaces these Jobs nor trains again; the
    CronJobs carry on from there.
    """

    def __init__(
        self,
        name: str,
        ctx: pulumi.Output[Context],
        jobs: JobsConfig,
        after: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:k8s:Bootstrap", name, None, opts)
        previous = after
        for job in BOOTSTRAP_JOBS:
            obj = ctx.apply(partial(_bootstrap_job, job))
            # The Job's own activeDeadlineSeconds decides when a run has failed, not Pulumi's timeout.
            deadline = f"{getattr(jobs, job).active_deadline_seconds + 60}s"
            created = k8s.batch.v1.Job(
                f"{name}-{job}",
                metadata=obj["metadata"],
                spec=obj["spec"],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=previous,
                    ignore_changes=["spec"],
                    custom_timeouts=pulumi.CustomTimeouts(create=deadline),
                ),
            )
            previous = [created]
        self.done = created
        self.register_outputs({"jobs": list(BOOTSTRAP_JOBS)})


def _bootstrap_job(job: str, ctx: Context) -> Obj:
    return build_bootstrap_job(ctx, job)
