"""The program body: typed config in, platform out.

:func:`build` declares the platform for either cluster mode and returns a :class:`Platform` holding
what the Kubernetes workloads need (provider, registry, bucket, identities), so ``infra/k8s`` plugs in
without knowing which mode created them. :func:`main` is what ``__main__`` and the mock harness run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.aws.cluster import Cluster
from infra.aws.identity import Identities
from infra.aws.network import Network
from infra.aws.registry import Registry
from infra.aws.storage import Storage
from infra.aws.tags import default_tags
from infra.config import ConfigError, StackConfig, load_from_pulumi
from infra.images import image_reference
from infra.k8s.common import field_manager, with_field_manager
from infra.k8s.prometheus_stack import PrometheusStack
from infra.naming import PROJECT, SERVICE_ACCOUNTS


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
    registry = Registry("registry", cfg.ecr, cfg.protection, opts=opts)
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
            kubernetes_version=cfg.cluster.version,
            k8s_provider=cluster.provider,
            after=list(cluster.karpenter.node_pools),
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
    if cfg.image_digest is None:
        pulumi.log.warn(
            "purchase-classifier:imageDigest is not set: the platform is created but the workloads are "
            "skipped. Build the image and run `pulumi config set purchase-classifier:imageDigest "
            "sha256:<digest>`."
        )
    else:
        digest = cfg.image_digest
        platform.image = platform.registry_url.apply(lambda url: image_reference(url, digest))
    return platform


def export_outputs(platform: Platform) -> None:
    """Stack outputs; the kubeconfig stays secret."""
    pulumi.export("clusterMode", platform.config.cluster.mode)
    pulumi.export("clusterName", platform.cluster_name)
    pulumi.export("clusterEndpoint", platform.cluster_endpoint)
    if platform.kubeconfig is not None:
        pulumi.export("kubeconfig", pulumi.Output.secret(platform.kubeconfig))
    pulumi.export("registryUrl", platform.registry_url)
    pulumi.export("bucketName", platform.bucket_name)
    pulumi.export("roleArns", platform.role_arns)
    pulumi.export("namespace", platform.namespace)
    pulumi.export("imageReference", platform.image)


def adoptable(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Give every Kubernetes object the stack's stable field manager (:func:`field_manager`), so an
    object that a killed run created without recording it is taken over by the next run.

    A stack transformation is the one place every object passes through, whichever component (or
    cluster mode) builds it. The in-process kind (``register_stack_transformation``) is used because
    the newer ``register_resource_transform`` needs the engine's callback server, which the offline
    mock runs (tests, ``render``) do not have.
    """
    if not args.type_.startswith("kubernetes:") or "metadata" not in args.props:
        return None  # not an object (the provider, a Helm release)
    manager = field_manager(pulumi.get_stack())
    meta = pulumi.Output.from_input(args.props["metadata"]).apply(lambda m: with_field_manager(m, manager))
    return pulumi.ResourceTransformationResult({**args.props, "metadata": meta}, args.opts)


def main() -> Platform:
    """Entry point of the Pulumi program: parse config (fail before any resource), build, export."""
    pulumi.runtime.register_stack_transformation(adoptable)
    try:
        cfg = load_from_pulumi()
    except ConfigError as exc:
        # RunError: Pulumi prints the message alone, without a Python traceback burying it.
        raise pulumi.RunError(str(exc)) from None
    platform = build(cfg)
    if platform.image is not None:  # no digest yet: build() warned, the workloads wait for one
        from infra.k8s.workloads import Workloads

        workloads = Workloads("workloads", platform)
        pulumi.export("servingUrl", workloads.serving.url)
        pulumi.export("daskSchedulerAddress", workloads.dask.scheduler_address)
    export_outputs(platform)
    return platform
