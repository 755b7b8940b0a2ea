"""The EKS cluster: control plane, access entries, node groups, addons and a Kubernetes provider.

Secure by default (principle 5): secrets envelope-encrypted with a KMS key, control-plane logs with
retention, the private endpoint always on and the public one off or limited to CIDRs, access through
EKS access entries (``API`` mode) instead of the ``aws-auth`` ConfigMap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.aws.policies import assume_role_policy, cluster_assume_role_policy, pod_identity_trust_policy
from infra.config import Cluster as ClusterConfig
from infra.config import NodeGroup as NodeGroupConfig
from infra.naming import DASK_NODE_LABEL_KEY, DASK_NODE_LABEL_VALUE, DASK_TAINT_KEY, DASK_TAINT_VALUE

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator")
ADDONS = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent", "coredns", "aws-ebs-csi-driver")
ADDONS_NEEDING_NODES = frozenset({"coredns", "aws-ebs-csi-driver"})
"""These run as Deployments; creating them before any node exists leaves them degraded."""
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
_MANAGED = "arn:aws:iam::aws:policy/"
CLUSTER_POLICIES = (f"{_MANAGED}AmazonEKSClusterPolicy",)
NODE_POLICIES = (
    f"{_MANAGED}AmazonEKSWorkerNodePolicy",
    f"{_MANAGED}AmazonEKS_CNI_Policy",
    f"{_MANAGED}AmazonEC2ContainerRegistryPullOnly",
)
EBS_CSI_POLICY = f"{_MANAGED}service-role/AmazonEBSCSIDriverPolicy"
ADMIN_ACCESS_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


@dataclass(frozen=True)
class NodeGroupSpec:
    """Everything a managed node group needs besides the cluster and subnets."""

    name: str
    instance_types: list[str]
    capacity_type: str
    min_size: int
    max_size: int
    desired_size: int
    disk_size: int
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


def node_group_specs(system: NodeGroupConfig, dask: NodeGroupConfig) -> list[NodeGroupSpec]:
    """The system and Dask node groups.

    The Dask group is labelled (workers select it) and tainted ``NO_SCHEDULE`` (nothing else lands
    on it, so a spot reclaim never takes serving or CoreDNS down).
    """

    def spec(name: str, ng: NodeGroupConfig, **extra: Any) -> NodeGroupSpec:
        return NodeGroupSpec(
            name=name,
            instance_types=list(ng.instance_types),
            capacity_type=ng.capacity_type,
            min_size=ng.min_size,
            max_size=ng.max_size,
            desired_size=ng.desired_size,
            disk_size=ng.disk_size_gb,
            **extra,
        )

    return [
        spec("system", system, labels={"purchase-classifier/pool": "system"}),
        spec(
            "dask",
            dask,
            labels={DASK_NODE_LABEL_KEY: DASK_NODE_LABEL_VALUE},
            taints=[{"key": DASK_TAINT_KEY, "value": DASK_TAINT_VALUE, "effect": "NO_SCHEDULE"}],
        ),
    ]


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> dict[str, Any]:
    """A kubeconfig that authenticates with ``aws eks get-token`` (no long-lived credentials in it)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "users": [
            {
                "name": cluster_name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "aws",
                        "args": [
                            "--region",
                            region,
                            "eks",
                            "get-token",
                            "--cluster-name",
                            cluster_name,
                            "--output",
                            "json",
                        ],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
    }


def _role(name: str, trust: pulumi.Input[str], policies: tuple[str, ...], parent: pulumi.Resource) -> aws.iam.Role:
    """A role trusting ``trust`` (a JSON policy document) with AWS managed ``policies`` attached."""
    role = aws.iam.Role(name, assume_role_policy=trust, opts=pulumi.ResourceOptions(parent=parent))
    for i, arn in enumerate(policies):
        aws.iam.RolePolicyAttachment(
            f"{name}-{i}", role=role.name, policy_arn=arn, opts=pulumi.ResourceOptions(parent=parent)
        )
    return role


class Cluster(pulumi.ComponentResource):
    """EKS control plane, node groups, addons, and a Kubernetes provider for the workloads."""

    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(
        self,
        name: str,
        cfg: ClusterConfig,
        subnet_ids: list[pulumi.Output[str]],
        region: str,
        account_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:aws:Cluster", name, None, opts)
        if cfg.node_groups is None:  # config validation guarantees it in eks mode
            raise ValueError("cluster.nodeGroups is required in eks mode")
        child = pulumi.ResourceOptions(parent=self)

        cluster_role = _role(f"{name}-cluster", json.dumps(cluster_assume_role_policy()), CLUSTER_POLICIES, self)
        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {cfg.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        # Created before the cluster so EKS does not create it without retention.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{cfg.name}/cluster",
            retention_in_days=cfg.log_retention_days,
            opts=child,
        )
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=cfg.name,
            version=cfg.version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=cfg.endpoint_public_access,
                public_access_cidrs=cfg.public_access_cidrs if cfg.endpoint_public_access else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=True,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )

        for i, arn in enumerate(cfg.admin_role_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}", cluster_name=cluster.name, principal_arn=arn, type="STANDARD", opts=child
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                cluster_name=cluster.name,
                principal_arn=arn,
                policy_arn=ADMIN_ACCESS_POLICY,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )

        node_role = _role(f"{name}-node", json.dumps(assume_role_policy("ec2.amazonaws.com")), NODE_POLICIES, self)
        base_addons = []
        for addon in ADDONS:
            if addon in ADDONS_NEEDING_NODES:
                continue
            base_addons.append(
                aws.eks.Addon(
                    f"{name}-{addon}",
                    cluster_name=cluster.name,
                    addon_name=addon,
                    resolve_conflicts_on_create="OVERWRITE",
                    resolve_conflicts_on_update="OVERWRITE",
                    opts=child,
                )
            )

        groups = []
        for spec in node_group_specs(cfg.node_groups.system, cfg.node_groups.dask):
            groups.append(
                aws.eks.NodeGroup(
                    f"{name}-{spec.name}",
                    cluster_name=cluster.name,
                    node_group_name_prefix=f"{cfg.name}-{spec.name}-",
                    node_role_arn=node_role.arn,
                    subnet_ids=subnet_ids,
                    instance_types=spec.instance_types,
                    capacity_type=spec.capacity_type,
                    disk_size=spec.disk_size,
                    scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                        min_size=spec.min_size, max_size=spec.max_size, desired_size=spec.desired_size
                    ),
                    update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
                    labels=spec.labels,
                    taints=[aws.eks.NodeGroupTaintArgs(**t) for t in spec.taints],
                    opts=pulumi.ResourceOptions(
                        parent=self,
                        depends_on=base_addons,
                        # The cluster autoscaler owns desired size after creation.
                        ignore_changes=["scalingConfig.desiredSize"],
                    ),
                )
            )

        ebs_trust = pulumi.Output.from_input(account_id).apply(lambda a: json.dumps(pod_identity_trust_policy(a)))
        ebs_role = _role(f"{name}-ebs-csi", ebs_trust, (EBS_CSI_POLICY,), self)
        node_addons = []
        for addon in sorted(ADDONS_NEEDING_NODES):
            node_addons.append(
                aws.eks.Addon(
                    f"{name}-{addon}",
                    cluster_name=cluster.name,
                    addon_name=addon,
                    resolve_conflicts_on_create="OVERWRITE",
                    resolve_conflicts_on_update="OVERWRITE",
                    pod_identity_associations=(
                        [
                            aws.eks.AddonPodIdentityAssociationArgs(
                                role_arn=ebs_role.arn, service_account=EBS_CSI_SERVICE_ACCOUNT
                            )
                        ]
                        if addon == "aws-ebs-csi-driver"
                        else None
                    ),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=groups),
                )
            )

        config_json = pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority.data).apply(
            lambda args: json.dumps(kubeconfig(args[0], args[1], args[2] or "", region))
        )
        self.kubeconfig = pulumi.Output.secret(config_json)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*groups, *node_addons]),
        )
        self.name = cluster.name
        self.endpoint = cluster.endpoint
        self.register_outputs({"name": self.name, "endpoint": self.endpoint, "kubeconfig": self.kubeconfig})
