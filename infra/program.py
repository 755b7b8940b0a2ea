"""The program body: typed config in, platform out (:mod:`infra.platform` puts it together).

:func:`main` is what ``__main__``, the engine and the mock harness run.
"""

from __future__ import annotations

import pulumi

from infra.config import ConfigError, load_from_pulumi
from infra.k8s.common import field_manager, with_field_manager
from infra.platform import Platform, Workloads, build


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
        workloads = Workloads("workloads", platform)
        pulumi.export("servingUrl", workloads.serving.url)
        pulumi.export("daskSchedulerAddress", workloads.dask.scheduler_address)
    export_outputs(platform)
    return platform
