"""All Kubernetes workloads of a stack, declared onto a :class:`~infra.program.Platform`.

This is the one place that turns the platform's outputs (image reference, bucket) into the plain
:class:`~infra.k8s.common.Context` the builders take, and the one place that creates the namespace
and ServiceAccounts; everything else is parented below it and uses the platform's provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi

from infra.k8s.common import Context, database_port
from infra.k8s.dask import DaskCluster, worker_memory_limit
from infra.k8s.jobs import Bootstrap, Jobs
from infra.k8s.monitoring import MonitoringObjects
from infra.k8s.namespace import Namespace
from infra.k8s.serving import Serving

if TYPE_CHECKING:
    from infra.program import Platform


class Workloads(pulumi.ComponentResource):
    """Namespace, Dask, serving and CronJobs for one stack."""

    def __init__(self, name: str, platform: Platform, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(
            "purchase-classifier:k8s:Workloads",
            name,
            None,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(providers=[platform.k8s_provider])),
        )
        cfg = platform.config
        if platform.image is None or cfg.image_digest is None:
            raise ValueError("workloads need an image digest; the program skips them when none is set")
        if cfg.database_url is None:  # pragma: no cover - config validation requires it with a digest
            raise ValueError("databaseUrl is required for the workloads")
        digest = cfg.image_digest
        try:  # derived settings that config validation cannot see: fail before any object
            worker_memory_limit(cfg.workloads.dask.workers.resources)
        except ValueError as exc:
            raise pulumi.RunError(f"purchase-classifier:workloads.dask.{exc}") from None
        has_keys = cfg.storage_access_key_id is not None and cfg.storage_secret_access_key is not None
        db_url = cfg.database_url.get_secret_value()

        def context(values: list[str]) -> Context:
            image, bucket = values
            return Context(
                workloads=cfg.workloads,
                instance=cfg.environment,
                image=image,
                image_digest=digest,
                store_url=f"s3://{bucket}",
                storage_endpoint_url=platform.storage_endpoint_url,
                storage_credentials=has_keys,
                aws_region=platform.region,
                dask_node_pool=cfg.is_eks,
                database_port=database_port(db_url),
                kubernetes_version=cfg.cluster.version,
            )

        ctx = pulumi.Output.all(platform.image, platform.bucket_name).apply(context)
        child = pulumi.ResourceOptions(parent=self)
        storage_keys = None
        if has_keys:
            assert cfg.storage_access_key_id is not None and cfg.storage_secret_access_key is not None
            storage_keys = (
                pulumi.Output.secret(cfg.storage_access_key_id.get_secret_value()),
                pulumi.Output.secret(cfg.storage_secret_access_key.get_secret_value()),
            )
        self.namespace = Namespace(
            "namespace",
            ctx,
            database_url=pulumi.Output.secret(db_url),
            role_arns=platform.role_arns,
            storage_keys=storage_keys,
            opts=child,
        )
        after_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        # A component's depends_on does not reach the objects inside it; every object below is built
        # from ctx, so carrying the namespace component in ctx makes each one wait for the namespace,
        # its ServiceAccounts and Secrets. Without it, on 2 cores the engine's parallel slots can all
        # be taken by objects retrying "namespace not found" while the namespace waits for a slot.
        ctx = pulumi.Output.all(ctx, self.namespace.urn).apply(lambda values: values[0])
        self.dask = DaskCluster("dask", ctx, opts=after_ns)
        # The first deploy trains once before serving exists: a serving pod is ready only with a model.
        self.bootstrap = Bootstrap("bootstrap", ctx, cfg.workloads.jobs, after=[self.namespace, self.dask], opts=child)
        self.serving = Serving("serving", ctx, opts=after_ns, after=[self.bootstrap.done])
        self.jobs = Jobs("jobs", ctx, opts=after_ns)
        if cfg.workloads.monitoring.enabled:  # the monitoring.coreos.com kinds need the operator's CRDs
            operator = [platform.monitoring_operator] if platform.monitoring_operator is not None else []
            MonitoringObjects("monitoring", ctx, after=[self.namespace, *operator], opts=child)
        self.register_outputs({"schedulerAddress": self.dask.scheduler_address, "servingUrl": self.serving.url})
