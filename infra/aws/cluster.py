"""The EKS cluster: control plane, access entries, system node group, addons, and a Kubernetes
provider (Karpenter, declared beside it by :mod:`infra.platform`, is parented here).

Secure by default (principle 5): secrets envelope-encrypted with a KMS key, control-plane logs with
retention in a KMS-encrypted log group, the private endpoint always on and the public one off or
limited to CIDRs, access only through explicit EKS access entries (``API`` mode, the creator gets no
implicit admin), IMDSv2 with hop limit 1 and encrypted gp3 root volumes on every node, and
NetworkPolicies enforced by the VPC CNI. Addon versions are pinned per cluster version
(:data:`infra.schema.SUPPORTED_CLUSTER_VERSIONS`); the upgrade policy keeps the cluster on standard
support, so an unsupported version is upgraded by AWS instead of billed as extended support.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.aws.policies import assume_role_policy, cluster_assume_role_policy, pod_identity_trust_policy
from infra.aws.roles import bounded_role_args
from infra.aws.stateful import encrypted_log_group, stateful_options
from infra.catalog import NODE_POLICIES
from infra.naming import DISCOVERY_TAG, PREVIEW_GROUP, SYSTEM_TAINT_KEY
from infra.schema import SUPPORTED_CLUSTER_VERSIONS, Protection
from infra.schema import Cluster as ClusterConfig

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator")
ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
"""Node networking and credentials: in place before the first node joins."""
ADDONS_ON_SYSTEM_NODES = ("coredns", "aws-ebs-csi-driver")
"""Deployments that tolerate the system nodes' taint; created once those nodes exist."""
ADDONS_ON_POOL_NODES = ("metrics-server",)
"""A Deployment that does not tolerate the system taint: created once Karpenter can give it a node."""
VPC_CNI_CONFIGURATION = {"enableNetworkPolicy": "true"}
"""The VPC CNI enforces NetworkPolicies only with this (its network policy agent); without it the
namespace's default-deny and every allow-list are ignored."""
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
_MANAGED = "arn:aws:iam::aws:policy/"
CLUSTER_POLICIES = (f"{_MANAGED}AmazonEKSClusterPolicy",)
EBS_CSI_POLICY = f"{_MANAGED}service-role/AmazonEBSCSIDriverPolicy"
ADMIN_ACCESS_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
API_PORT = 443
IMDS_HOP_LIMIT = 1
"""IMDSv2 only, one hop: a pod (one hop further than the node) cannot read the node role's credentials."""


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


def principal_key(arn: str) -> str:
    """A resource-name key for an IAM role ARN: ``<account>-<role path and name>`` (``/`` as ``-``)."""
    account = arn.split(":")[4]
    role = arn.split(":role/", 1)[1]
    return f"{account}-{role.replace('/', '-')}"


def _role(
    name: str,
    trust: pulumi.Input[str],
    policies: tuple[str, ...],
    account_id: pulumi.Input[str],
    parent: pulumi.Resource,
) -> aws.iam.Role:
    """A role trusting ``trust`` (a JSON policy document) with AWS managed ``policies`` attached."""
    role = aws.iam.Role(
        name, assume_role_policy=trust, **bounded_role_args(account_id), opts=pulumi.ResourceOptions(parent=parent)
    )
    for i, arn in enumerate(policies):
        aws.iam.RolePolicyAttachment(
            f"{name}-{i}", role=role.name, policy_arn=arn, opts=pulumi.ResourceOptions(parent=parent)
        )
    return role


class Cluster(pulumi.ComponentResource):
    """EKS control plane, system node group, addons, and a Kubernetes provider.

    The addons that run on Karpenter's nodes wait for its NodePools: :meth:`add_pool_addons`.
    """

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
        protection: Protection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:aws:Cluster", name, None, opts)
        if cfg.system_nodes is None or cfg.node_pools is None:  # config validation guarantees both in eks mode
            raise ValueError("cluster.systemNodes and cluster.nodePools are required in eks mode")
        protection = protection or Protection()
        self._name = name
        self._addon_versions = SUPPORTED_CLUSTER_VERSIONS[cfg.version]
        child = pulumi.ResourceOptions(parent=self)

        cluster_role = _role(
            f"{name}-cluster", json.dumps(cluster_assume_role_policy()), CLUSTER_POLICIES, account_id, self
        )
        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {cfg.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=stateful_options(protection, self),
        )
        # Created before the cluster so EKS does not create it without retention or encryption.
        log_group = encrypted_log_group(
            f"{name}-logs",
            f"/aws/eks/{cfg.name}/cluster",
            cfg.log_retention_days,
            region,
            account_id,
            protection,
            self,
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
                # Every admin is an explicit access entry below; an implicit one for whoever ran the
                # first `pulumi up` would appear nowhere in code and collide with an explicit entry.
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            opts=stateful_options(protection, self, depends_on=[log_group]),
        )
        # Karpenter finds the cluster security group (EKS creates it) by this tag.
        aws.ec2.Tag(
            f"{name}-sg-discovery",
            resource_id=cluster.vpc_config.cluster_security_group_id,
            key=DISCOVERY_TAG,
            value=cfg.name,
            opts=child,
        )

        # Who reaches the private endpoint (its network interfaces carry the cluster security group):
        # one rule per source, named by the source, so editing the list touches only what changed.
        for cidr in cfg.private_access.cidrs:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-from-{cidr.replace('/', '-')}",
                security_group_id=cluster.vpc_config.cluster_security_group_id,
                description="Kubernetes API from the deployer's network (cluster.privateAccess.cidrs)",
                ip_protocol="tcp",
                from_port=API_PORT,
                to_port=API_PORT,
                cidr_ipv4=cidr,
                opts=child,
            )
        for group in cfg.private_access.security_group_ids:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-from-{group}",
                security_group_id=cluster.vpc_config.cluster_security_group_id,
                description="Kubernetes API from the deployer's group (cluster.privateAccess.securityGroupIds)",
                ip_protocol="tcp",
                from_port=API_PORT,
                to_port=API_PORT,
                referenced_security_group_id=group,
                opts=child,
            )

        def access_entry(role: str, arn: str, index: int, policy_arn: str | None) -> pulumi.Resource:
            """The principal's access entry, and with ``policy_arn`` that EKS policy on the whole cluster.
            Both are named by the principal, so reordering the list changes nothing and removing one role
            touches only its entry. The association takes the principal from its entry: it is created
            after the entry and deleted before it. Returns what exists last."""
            key = f"{name}-{role}-{principal_key(arn)}"
            # The list-index names of earlier versions: a stack deployed with them keeps its entries
            # (renamed in place) on its first update, provided the list is not reordered in it too.
            was = [pulumi.Alias(name=f"{name}-{role}-{index}")]
            entry = aws.eks.AccessEntry(
                key,
                cluster_name=cluster.name,
                principal_arn=arn,
                type="STANDARD",
                # The viewers get no EKS policy (AmazonEKSAdminViewPolicy reads Secrets), only the group
                # the program's read-only ClusterRole is bound to (infra.k8s.preview_access).
                kubernetes_groups=None if policy_arn else [PREVIEW_GROUP],
                opts=pulumi.ResourceOptions(parent=self, aliases=was),
            )
            if policy_arn is None:
                return entry
            return aws.eks.AccessPolicyAssociation(
                key,
                cluster_name=entry.cluster_name,
                principal_arn=entry.principal_arn,
                policy_arn=policy_arn,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry], aliases=was),
            )

        admin_access = [
            access_entry("admin", arn, i, policy_arn=ADMIN_ACCESS_POLICY) for i, arn in enumerate(cfg.admin_role_arns)
        ]
        for i, arn in enumerate(cfg.viewer_role_arns):
            access_entry("viewer", arn, i, policy_arn=None)

        self.name = cluster.name
        addon = self._addon
        base_addons = [
            addon(
                a,
                [],
                configuration_values=json.dumps(VPC_CNI_CONFIGURATION) if a == "vpc-cni" else None,
            )
            for a in ADDONS_BEFORE_NODES
        ]

        system = cfg.system_nodes
        node_role = _role(
            f"{name}-node", json.dumps(assume_role_policy("ec2.amazonaws.com")), NODE_POLICIES, account_id, self
        )
        template = aws.ec2.LaunchTemplate(
            f"{name}-system",
            description=f"System nodes of {cfg.name}: IMDSv2 with hop limit 1, encrypted gp3 root volume",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=IMDS_HOP_LIMIT
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=system.disk_size_gb,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            update_default_version=True,
            opts=child,
        )
        system_group = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=cluster.name,
            node_group_name_prefix=f"{cfg.name}-system-",
            node_role_arn=node_role.arn,
            subnet_ids=subnet_ids,
            instance_types=list(system.instance_types),
            capacity_type="ON_DEMAND",
            ami_type=SYSTEM_AMI_TYPE,
            # The control plane's version (an output: updated after the control plane), so a version
            # bump upgrades the system nodes in the same `pulumi up`, one node at a time.
            version=cluster.version,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=system.min_size, max_size=system.max_size, desired_size=system.desired_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels={"purchase-classifier/pool": "system"},
            taints=[aws.eks.NodeGroupTaintArgs(key=SYSTEM_TAINT_KEY, value="true", effect="NO_SCHEDULE")],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=base_addons,
                # Set at creation; resizing by hand (or an upgrade surge) is not undone by `pulumi up`.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

        ebs_trust = pulumi.Output.from_input(account_id).apply(lambda a: json.dumps(pod_identity_trust_policy(a)))
        ebs_role = _role(f"{name}-ebs-csi", ebs_trust, (EBS_CSI_POLICY,), account_id, self)
        system_addons = [
            addon(
                a,
                [system_group],
                pod_identity_associations=(
                    [
                        aws.eks.AddonPodIdentityAssociationArgs(
                            role_arn=ebs_role.arn, service_account=EBS_CSI_SERVICE_ACCOUNT
                        )
                    ]
                    if a == "aws-ebs-csi-driver"
                    else None
                ),
            )
            for a in ADDONS_ON_SYSTEM_NODES
        ]

        config_json = pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority.data).apply(
            lambda args: json.dumps(kubeconfig(args[0], args[1], args[2] or "", region))
        )
        self.kubeconfig = pulumi.Output.secret(config_json)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[system_group, *system_addons, *admin_access]),
        )
        self.endpoint = cluster.endpoint
        self.register_outputs({"name": self.name, "endpoint": self.endpoint, "kubeconfig": self.kubeconfig})

    def _addon(self, addon_name: str, depends_on: Sequence[pulumi.Resource], **extra: Any) -> aws.eks.Addon:
        return aws.eks.Addon(
            f"{self._name}-{addon_name}",
            cluster_name=self.name,
            addon_name=addon_name,
            addon_version=self._addon_versions.for_addon(addon_name),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
            **extra,
        )

    def add_pool_addons(self, node_pools: Sequence[pulumi.Resource]) -> None:
        """The addons that need a node from Karpenter's pools (:data:`ADDONS_ON_POOL_NODES`)."""
        for a in ADDONS_ON_POOL_NODES:
            self._addon(a, node_pools)
