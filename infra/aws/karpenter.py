"""Node autoscaling with Karpenter, declared as terraform-aws-eks's ``karpenter`` module and
awslabs/data-on-eks do it: the controller's Pod Identity role, the interruption queue and its
EventBridge rules, the node role with its access entry, the controller's Helm charts (pinned), and
the custom resources that say what it may launch (one EC2NodeClass and one NodePool per pool).

The builders (``build_*``) return plain objects: the tests validate them against Karpenter's own CRD
schemas of :data:`KARPENTER_VERSION`.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.aws.policies import (
    assume_role_policy,
    interruption_queue_policy,
    karpenter_controller_policy,
    pod_identity_trust_policy,
)
from infra.aws.roles import bounded_role_args
from infra.catalog import NODE_POLICIES, instance_cpu_sizes
from infra.naming import (
    DASK_NODE_LABEL_VALUE,
    DASK_TAINT_EFFECT,
    DASK_TAINT_KEY,
    DASK_TAINT_VALUE,
    DISCOVERY_TAG,
    POOL_LABEL,
    SYSTEM_TAINT_KEY,
)
from infra.schema import NodePool, NodePools

Obj = dict[str, Any]

KARPENTER_VERSION = "1.14.3"
"""Controller and chart version; supports Kubernetes 1.26 to 1.36 (Karpenter's compatibility matrix).
The tests validate the custom resources against this version's CRDs (tests/infra/crds/)."""
CHART_REPOSITORY = "oci://public.ecr.aws/karpenter"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"
NODE_CLASS_API = "karpenter.k8s.aws/v1"
NODE_POOL_API = "karpenter.sh/v1"
NODE_EXPIRY = "720h"
"""Nodes are replaced after 30 days, so every node runs a recent AMI even without an upgrade."""

INTERRUPTION_EVENTS: dict[str, Obj] = {
    "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
}
"""EventBridge patterns Karpenter acts on: it drains a node before AWS takes it away."""

CONSOLIDATION = {
    # A Dask worker holds results in memory: never evict one to save cost; remove only empty nodes.
    "dask": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m", "budgets": [{"nodes": "1"}]},
    "general": {
        "consolidationPolicy": "WhenEmptyOrUnderutilized",
        "consolidateAfter": "5m",
        "budgets": [{"nodes": "10%"}],
    },
}
"""Per pool: when Karpenter removes or replaces nodes, and how many at once."""


def instance_cpu_values(pool: NodePool) -> list[str]:
    """The ``instance-cpu`` values a pool allows (Karpenter requirement values are strings)."""
    return [str(c) for c in instance_cpu_sizes(pool.min_instance_cpu, pool.max_instance_cpu)]


def build_ec2_node_class(name: str, cluster_name: str, node_role: str, disk_size_gb: int, ami_release: str) -> Obj:
    """AL2023 nodes of AMI release ``ami_release`` (``v<YYYYMMDD>`` or ``latest``), IMDSv2 only with hop
    limit 1 (pods cannot reach the node's credentials), and an encrypted gp3 root volume."""
    selector = [{"tags": {DISCOVERY_TAG: cluster_name}}]
    return {
        "apiVersion": NODE_CLASS_API,
        "kind": "EC2NodeClass",
        "metadata": {"name": name},
        "spec": {
            "role": node_role,
            "amiFamily": "AL2023",
            # The release's AL2023 AMI for the control plane's Kubernetes version: a cluster upgrade, or
            # a new release in the stack file, drifts every node to the matching AMI, replaced within the
            # NodePools' disruption budgets. `latest` also drifts them whenever AWS publishes an AMI.
            "amiSelectorTerms": [{"alias": f"al2023@{ami_release}"}],
            "subnetSelectorTerms": selector,
            "securityGroupSelectorTerms": selector,
            "metadataOptions": {
                "httpEndpoint": "enabled",
                "httpProtocolIPv6": "disabled",
                "httpPutResponseHopLimit": 1,
                "httpTokens": "required",
            },
            "blockDeviceMappings": [
                {
                    "deviceName": "/dev/xvda",
                    "ebs": {
                        "volumeSize": f"{disk_size_gb}Gi",
                        "volumeType": "gp3",
                        "encrypted": True,
                        "deleteOnTermination": True,
                    },
                }
            ],
            "tags": {"Name": f"{cluster_name}-{name}"},
        },
    }


def build_node_pool(name: str, pool: NodePool) -> Obj:
    """A NodePool diversified by instance requirements (categories, sizes, generation), not a list
    of types: more spot pools to draw from, fewer interruptions. No minimum: with no pod asking for
    it, a pool has no node."""
    requirements = [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": list(pool.capacity_types)},
        {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": list(pool.instance_categories)},
        {"key": "karpenter.k8s.aws/instance-cpu", "operator": "In", "values": instance_cpu_values(pool)},
        {
            "key": "karpenter.k8s.aws/instance-generation",
            "operator": "Gt",
            "values": [str(pool.min_instance_generation - 1)],
        },
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    template_spec: Obj = {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
        "requirements": requirements,
        "expireAfter": NODE_EXPIRY,
    }
    labels = {POOL_LABEL: name}  # "dask" is DASK_NODE_LABEL_VALUE: the workers' nodeSelector
    if name == DASK_NODE_LABEL_VALUE:
        template_spec["taints"] = [{"key": DASK_TAINT_KEY, "value": DASK_TAINT_VALUE, "effect": DASK_TAINT_EFFECT}]
    return {
        "apiVersion": NODE_POOL_API,
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {"metadata": {"labels": labels}, "spec": template_spec},
            "limits": {"cpu": pool.limits.cpu, "memory": pool.limits.memory},
            "disruption": CONSOLIDATION[name],
        },
    }


def helm_values(cluster_name: str, queue_name: str, replicas: int) -> Obj:
    """Chart values: on the system nodes (tolerating their taint), DNS from the VPC resolver (it
    starts before CoreDNS has a node), interruption handling through the queue."""
    return {
        "replicas": replicas,
        "dnsPolicy": "Default",
        "serviceAccount": {"name": SERVICE_ACCOUNT},
        "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
        "tolerations": [{"key": SYSTEM_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        "controller": {
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
        },
    }


def _node_class(name: str, disk_size_gb: int, ami_release: str, values: list[str]) -> Obj:
    cluster_name, node_role = values
    return build_ec2_node_class(name, cluster_name, node_role, disk_size_gb, ami_release)


class Karpenter(pulumi.ComponentResource):
    """Karpenter's AWS side, its Helm charts and the two pools (:class:`~infra.schema.NodePools`).

    :param ami_release: AL2023 AMI release of the nodes (``cluster.nodeAmiRelease``).
    :param k8s_provider: the cluster's Kubernetes provider (Helm releases and custom resources).
    :param replicas: controller replicas; at most the system group's minimum size, since the chart
        keeps replicas on different nodes.
    """

    node_pools: list[k8s.apiextensions.CustomResource]

    def __init__(
        self,
        name: str,
        *,
        cluster_name: pulumi.Output[str],
        pools: NodePools,
        ami_release: str,
        region: str,
        account_id: pulumi.Input[str],
        k8s_provider: k8s.Provider,
        replicas: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:aws:Karpenter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        queue = aws.sqs.Queue(
            f"{name}-interruptions",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruptions",
            queue_url=queue.url,
            policy=queue.arn.apply(lambda arn: json.dumps(interruption_queue_policy(arn))),
            opts=child,
        )
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{event}",
                description=f"Karpenter interruption handling: {pattern['detail-type'][0]}",
                event_pattern=json.dumps(pattern),
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{event}", rule=rule.name, target_id="KarpenterInterruptionQueue", arn=queue.arn, opts=child
            )

        node_role = aws.iam.Role(
            f"{name}-node",
            description="Nodes Karpenter launches",
            assume_role_policy=json.dumps(assume_role_policy("ec2.amazonaws.com")),
            **bounded_role_args(account_id),
            opts=child,
        )
        for i, arn in enumerate(NODE_POLICIES):
            aws.iam.RolePolicyAttachment(f"{name}-node-{i}", role=node_role.name, policy_arn=arn, opts=child)
        # Nodes join through an access entry (API authentication mode has no aws-auth ConfigMap).
        aws.eks.AccessEntry(
            f"{name}-node", cluster_name=cluster_name, principal_arn=node_role.arn, type="EC2_LINUX", opts=child
        )

        trust = pulumi.Output.from_input(account_id).apply(lambda a: json.dumps(pod_identity_trust_policy(a)))
        controller_role = aws.iam.Role(
            f"{name}-controller",
            description="Karpenter controller",
            assume_role_policy=trust,
            **bounded_role_args(account_id),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-controller",
            role=controller_role.id,
            policy=pulumi.Output.all(account_id, cluster_name, node_role.arn, queue.arn).apply(
                lambda args: json.dumps(
                    karpenter_controller_policy(
                        region=region,
                        account_id=args[0],
                        cluster_name=args[1],
                        node_role_arn=args[2],
                        queue_arn=args[3],
                    )
                )
            ),
            opts=child,
        )
        identity = aws.eks.PodIdentityAssociation(
            f"{name}-controller",
            cluster_name=cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            role_arn=controller_role.arn,
            opts=child,
        )

        on_cluster = pulumi.ResourceOptions(parent=self, provider=k8s_provider)
        # CRDs from their own chart: Helm never upgrades a chart's crds/ directory, this chart does.
        crds = k8s.helm.v3.Release(
            f"{name}-crd",
            name="karpenter-crd",
            chart=f"{CHART_REPOSITORY}/karpenter-crd",
            version=KARPENTER_VERSION,
            namespace=NAMESPACE,
            opts=on_cluster,
        )
        controller = k8s.helm.v3.Release(
            name,
            name="karpenter",
            chart=f"{CHART_REPOSITORY}/karpenter",
            version=KARPENTER_VERSION,
            namespace=NAMESPACE,
            skip_crds=True,
            values=pulumi.Output.all(cluster_name, queue.name).apply(
                lambda args: helm_values(args[0], args[1], replicas)
            ),
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[crds, identity])),
        )
        after_controller = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[controller]))
        self.node_pools = []
        for pool_name in ("dask", "general"):
            pool: NodePool = getattr(pools, pool_name)
            node_class = pulumi.Output.all(cluster_name, node_role.name).apply(
                partial(_node_class, pool_name, pool.disk_size_gb, ami_release)
            )
            nc = k8s.apiextensions.CustomResource(
                f"{name}-{pool_name}-class",
                api_version=NODE_CLASS_API,
                kind="EC2NodeClass",
                metadata=node_class["metadata"],
                spec=node_class["spec"],
                opts=after_controller,
            )
            node_pool = build_node_pool(pool_name, pool)
            self.node_pools.append(
                k8s.apiextensions.CustomResource(
                    f"{name}-{pool_name}",
                    api_version=NODE_POOL_API,
                    kind="NodePool",
                    metadata=node_pool["metadata"],
                    spec=node_pool["spec"],
                    opts=pulumi.ResourceOptions.merge(after_controller, pulumi.ResourceOptions(depends_on=[nc])),
                )
            )
        self.queue_name = queue.name
        self.node_role_arn = node_role.arn
        self.register_outputs({"queueName": self.queue_name, "nodeRoleArn": self.node_role_arn})
