"""The wiring (layer 5 of ``infra/``): the components put together into a platform and its workloads.

:func:`build` declares the platform for either cluster mode and returns a :class:`Platform` holding
what the Kubernetes workloads need (provider, registry, bucket, identities), so the workloads plug in
without knowing which mode created them. :class:`Workloads` is the one place that turns the
platform's outputs (image reference, bucket) into the plain :class:`~infra.k8s.common.Context` the
builders take, and the one place that creates the namespace and ServiceAccounts. Components never
import each other: whatever one needs from another is passed in here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.aws.cluster import Cluster
from infra.aws.identity import Identities
from infra.aws.karpenter import Karpenter
from infra.aws.network import Network
from infra.aws.registry import Registry
from infra.aws.storage import Storage
from infra.aws.tags import default_tags
from infra.images import image_reference
from infra.k8s.common import Context, database_port
from infra.k8s.dask import DaskCluster
from infra.k8s.jobs import Bootstrap, Jobs
from infra.k8s.monitoring import MonitoringObjects
from infra.k8s.namespace import Namespace
from infra.k8s.preview_access import PreviewAccess
from infra.k8s.prometheus_stack import PrometheusStack
from infra.k8s.serving import Serving
from infra.naming import PROJECT, SERVICE_ACCOUNTS
from infra.schema import StackConfig


@dataclass
class Platform:
    """What the workloads are deployed onto; identical in shape for ``eks`` and ``existing`` mode."""

    config: StackConfig
    k8s_provider: k8s.Provider
    """Every Kubernetes resource must be created with this provider."""
    namespace: str
    registry_url: pulumi.Output[str]
    """Repository URL without tag/digest (ECR in eks mode, ``registry`` config otherwise)."""
    bucket_name: pulumi.Output[str]
    storage_endpoint_url: str | None
    """S3-compatible endpoint (existing mode); ``None`` means AWS S3 through the pod's identity."""
    service_accounts: tuple[str, ...] = SERVICE_ACCOUNTS
    """ServiceAccount names the workloads must use (Pod Identity associations bind to these)."""
    role_arns: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    """IAM role per ServiceAccount (eks mode only; empty in existing mode)."""
    image: pulumi.Output[str] | None = None
    """``<registry>@sha256:...``, or ``None`` when no digest is configured (skip the workloads)."""
    cluster_name: pulumi.Output[str] | None = None
    cluster_endpoint: pulumi.Output[str] | None = None
    kubeconfig: pulumi.Output[str] | None = None
    """Secret."""
    region: str | None = None
    aws_provider: aws.Provider | None = field(default=None, repr=False)
    monitoring_operator: pulumi.Resource | None = None
    """The kube-prometheus-stack release (``workloads.monitoring.install``): the monitoring objects'
    kinds exist once it is installed."""


def _build_eks(cfg: StackConfig, stack: str, region: str) -> Platform:
    assert cfg.network is not None and cfg.is_eks  # guaranteed by config validation
    provider = aws.Provider(
        "aws",
        region=region,
        # An explicit provider does not read the stack's `aws:` config: pass the account guard on.
        allowed_account_ids=pulumi.Config("aws").get_object("allowedAccountIds"),
        default_tags=aws.ProviderDefaultTagsArgs(tags=default_tags(cfg, stack)),
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    # The account the provider's credentials deploy into: Pod Identity trust policies pin it.
    account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=provider)).account_id
    network = Network("network", cfg.network, cfg.cluster.name, region, account_id, cfg.protection, opts=opts)
    cluster = Cluster("cluster", cfg.cluster, network.private_subnet_ids, region, account_id, cfg.protection, opts=opts)
    assert cfg.cluster.node_pools is not None and cfg.cluster.system_nodes is not None  # eks mode, validated
    karpenter = Karpenter(
        "karpenter",
        cluster_name=cluster.name,
        pools=cfg.cluster.node_pools,
        ami_release=cfg.cluster.node_ami_release,
        region=region,
        account_id=account_id,
        k8s_provider=cluster.provider,
        # The chart keeps replicas on different nodes: at most the system group's minimum size.
        replicas=min(2, cfg.cluster.system_nodes.min_size),
        opts=pulumi.ResourceOptions(parent=cluster),
    )
    cluster.add_pool_addons(karpenter.node_pools)
    registry = Registry("registry", cfg.ecr, cfg.protection, opts=opts, running_digest=cfg.image_digest)
    storage = Storage("storage", cfg.storage, bucket_prefix=f"{PROJECT}-{stack}-", protection=cfg.protection, opts=opts)
    identities = Identities(
        "identities",
        cluster_name=cluster.name,
        namespace=cfg.workloads.namespace,
        bucket_arn=storage.bucket_arn,
        kms_key_arn=storage.kms_key_arn,
        account_id=account_id,
        opts=opts,
    )
    monitoring_operator = None
    if cfg.workloads.monitoring.install:
        monitoring_operator = PrometheusStack(
            "prometheus-stack",
            cfg.workloads.monitoring,
            alerting=cfg.alerting,
            kubernetes_version=cfg.cluster.version,
            k8s_provider=cluster.provider,
            after=list(karpenter.node_pools),
            opts=opts,
        ).release
    return Platform(
        config=cfg,
        k8s_provider=cluster.provider,
        namespace=cfg.workloads.namespace,
        registry_url=registry.repository_url,
        bucket_name=storage.bucket_name,
        storage_endpoint_url=None,
        role_arns=identities.role_arns,
        cluster_name=cluster.name,
        cluster_endpoint=cluster.endpoint,
        kubeconfig=cluster.kubeconfig,
        region=region,
        aws_provider=provider,
        monitoring_operator=monitoring_operator,
    )


def _build_existing(cfg: StackConfig) -> Platform:
    assert cfg.registry is not None and cfg.storage.bucket_name is not None  # config validation
    kubeconfig = pulumi.Output.secret(cfg.kubeconfig.get_secret_value()) if cfg.kubeconfig is not None else None
    provider = k8s.Provider("existing", kubeconfig=kubeconfig, context=cfg.cluster.context)
    return Platform(
        config=cfg,
        k8s_provider=provider,
        namespace=cfg.workloads.namespace,
        registry_url=pulumi.Output.from_input(cfg.registry),
        bucket_name=pulumi.Output.from_input(cfg.storage.bucket_name),
        storage_endpoint_url=cfg.storage.endpoint_url,
        cluster_name=pulumi.Output.from_input(cfg.cluster.name),
        kubeconfig=kubeconfig,
    )


def build(cfg: StackConfig, stack: str | None = None, region: str | None = None) -> Platform:
    """Declare the platform for ``cfg`` and return what the workloads need.

    :param stack: stack name for tags and names; defaults to the running stack.
    :param region: AWS region (eks mode); defaults to ``aws:region`` config.
    """
    stack = stack or pulumi.get_stack()
    if cfg.is_eks:
        region = region or pulumi.Config("aws").require("region")
        platform = _build_eks(cfg, stack, region)
    else:
        platform = _build_existing(cfg)
    PreviewAccess("preview-access", stack, cfg.environment, opts=pulumi.ResourceOptions(provider=platform.k8s_provider))
    if cfg.image_digest is None:
        pulumi.log.warn(
            "purchase-classifier:imageDigest is not set: the platform is created but the workloads are "
            "skipped. Record a pushed image's digest in the stack file: `scripts/build-image --repository "
            "<repo> --stack <stack>` builds, pushes and records it; for an image already pushed, "
            "`python -m infra promote --digest sha256:<hex> --to <stack>`."
        )
    else:
        digest = cfg.image_digest
        platform.image = platform.registry_url.apply(lambda url: image_reference(url, digest))
    return platform


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
