"""The AWS platform's config (eks mode): cluster, node pools, network, storage, registry, protection."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.catalog import LOG_RETENTION_DAYS
from infra.naming import PROJECT
from infra.schema.base import Cidr, DnsLabel, Model, Quantities
from infra.schema.versions import DEFAULT_CLUSTER_VERSION, SUPPORTED_CLUSTER_VERSIONS

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SECURITY_GROUP_RE = re.compile(r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


class SystemNodes(Model):
    """The small on-demand managed node group for system pods and Karpenter itself (tainted
    ``CriticalAddonsOnly``: workloads go to the Karpenter pools)."""

    instance_types: list[str] = Field(min_length=1, description="EC2 instance types, preferred first.")
    min_size: int = Field(ge=1, le=10, description="Fewest nodes (Karpenter runs here, so at least 1).")
    max_size: int = Field(ge=1, le=10, description="Most nodes.")
    desired_size: int = Field(ge=1, le=10, description="Nodes at creation; later changes are ignored.")
    disk_size_gb: int = Field(default=50, ge=20, le=1000, description="Encrypted gp3 root volume size in GiB.")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> SystemNodes:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(
                f"sizes must satisfy minSize <= desiredSize <= maxSize, got {self.min_size} <= "
                f"{self.desired_size} <= {self.max_size}"
            )
        return self


class NodePool(Model):
    """One Karpenter NodePool: which instances it may launch, and how much in total."""

    capacity_types: list[Literal["spot", "on-demand"]] = Field(
        min_length=1, description="`spot` and/or `on-demand`; with both, Karpenter prefers spot."
    )
    instance_categories: list[Literal["c", "m", "r"]] = Field(
        min_length=1, description="EC2 categories: `c` (2 GiB/vCPU), `m` (4), `r` (8)."
    )
    min_instance_cpu: int = Field(ge=1, le=192, description="Smallest instance size, in vCPUs.")
    max_instance_cpu: int = Field(ge=1, le=192, description="Largest instance size, in vCPUs.")
    min_instance_generation: int = Field(default=6, ge=1, le=10, description="Oldest instance generation.")
    limits: Quantities = Field(description="Most CPU and memory the pool's nodes may add up to.")
    disk_size_gb: int = Field(default=50, ge=20, le=1000, description="Encrypted gp3 root volume size in GiB.")

    @model_validator(mode="after")
    def _cpu_ordered(self) -> NodePool:
        if self.min_instance_cpu > self.max_instance_cpu:
            raise ValueError(f"minInstanceCpu {self.min_instance_cpu} is above maxInstanceCpu {self.max_instance_cpu}")
        for key in ("capacity_types", "instance_categories"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{to_camel(key)} {values} lists a value twice")
        return self


class NodePools(Model):
    """The two Karpenter NodePools."""

    dask: NodePool = Field(description="Dask workers only (labelled and tainted); spot is fine.")
    general: NodePool = Field(description="Scheduler, serving and jobs.")


class Protection(Model):
    """Guards on the stateful resources: EKS cluster, KMS keys, bucket and ECR repository."""

    protect: bool = Field(default=True, description="Pulumi refuses to delete them (`protect`).")
    retain_on_delete: bool = Field(
        default=True, description="Deleting them from the program leaves them in AWS (`retainOnDelete`)."
    )


class PrivateAccess(Model):
    """Who reaches the private API endpoint: an ingress rule on port 443 of the cluster security group
    for each entry (docs/delivery.md, "Reaching the cluster's API")."""

    cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Networks routed to the VPC (the CI runners' subnet, a peered VPC, a VPN's client range) "
        "allowed to reach the API on 443; never 0.0.0.0/0.",
    )
    security_group_ids: list[str] = Field(
        default_factory=list,
        description="Security groups in the cluster's VPC (e.g. the self-hosted runners') allowed to reach the "
        "API on 443.",
    )

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            if ipaddress.ip_network(cidr).prefixlen == 0:
                raise ValueError(f"{cidr!r} opens the API endpoint to every routed network; list specific CIDRs")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a CIDR twice")
        return value

    @field_validator("security_group_ids")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        for group in value:
            if not _SECURITY_GROUP_RE.match(group):
                raise ValueError(f"{group!r} is not a security group id (sg- and 8 or 17 hex digits)")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a security group twice")
        return value

    @property
    def empty(self) -> bool:
        return not self.cidrs and not self.security_group_ids


class Cluster(Model):
    """Where the workloads run."""

    mode: Literal["eks", "existing"] = Field(
        description="`eks`: create network, EKS, ECR, S3 and identities. `existing`: deploy onto a "
        "cluster from a kubeconfig/context with an existing registry and S3-compatible store."
    )
    name: DnsLabel = Field(description="Cluster name (eks) or a label for the existing cluster.")
    version: str = Field(
        default=DEFAULT_CLUSTER_VERSION,
        pattern=r"^1\.\d{2}$",
        description="Kubernetes version of the control plane (Pod Security is pinned to it); eks mode: one of "
        f"{', '.join(SUPPORTED_CLUSTER_VERSIONS)}, whose addon versions are pinned.",
    )
    endpoint_public_access: bool = Field(
        default=False, description="Expose the API endpoint publicly (only to `publicAccessCidrs`)."
    )
    public_access_cidrs: list[Cidr] = Field(
        default_factory=list, description="CIDRs allowed to reach a public API endpoint; never 0.0.0.0/0."
    )
    private_access: PrivateAccess = Field(
        default_factory=PrivateAccess,
        description="Who reaches the private API endpoint on 443 (eks mode); with `endpointPublicAccess: false` "
        "the deployer's network must be listed here.",
    )
    node_ami_release: str = Field(
        default="latest",
        pattern=r"^(latest|v\d{8})$",
        description="AL2023 AMI release of Karpenter's nodes (`v<YYYYMMDD>`, an `amazon-eks-ami` release) or "
        "`latest`, which rolls every node whenever AWS publishes an AMI; staging and prod pin one.",
    )
    admin_role_arns: list[str] = Field(
        default_factory=list, description="IAM roles granted cluster-admin through EKS access entries."
    )
    viewer_role_arns: list[str] = Field(
        default_factory=list,
        description="IAM roles mapped to the Kubernetes group `purchase-classifier:preview`, which reads "
        "every kind the program manages except Secrets: the CI preview and drift-detection role.",
    )
    log_retention_days: int = Field(
        default=30,
        description=f"Control-plane log retention; one of {', '.join(map(str, LOG_RETENTION_DAYS))}.",
    )
    system_nodes: SystemNodes | None = Field(
        default=None, description="Managed node group for system pods and Karpenter (eks mode)."
    )
    node_pools: NodePools | None = Field(default=None, description="Karpenter NodePools (eks mode).")
    context: str | None = Field(
        default=None, description="Kubeconfig context (existing mode); default is the current context."
    )

    @field_validator("public_access_cidrs")
    @classmethod
    def _no_world(cls, value: list[str]) -> list[str]:
        for cidr in value:
            if ipaddress.ip_network(cidr).prefixlen == 0:
                raise ValueError(f"{cidr!r} opens the API endpoint to the internet; list specific CIDRs")
        return value

    @field_validator("admin_role_arns", "viewer_role_arns")
    @classmethod
    def _role_arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not _ROLE_ARN_RE.match(arn):
                raise ValueError(f"{arn!r} is not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)")
        # Two access entries for one principal cannot exist: EKS rejects the second mid-update.
        duplicates = sorted({arn for arn in value if value.count(arn) > 1})
        if duplicates:
            raise ValueError(f"{duplicates} listed more than once; each role gets exactly one access entry")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"{value} is not a CloudWatch retention; allowed: {LOG_RETENTION_DAYS}")
        return value

    @model_validator(mode="after")
    def _mode_rules(self) -> Cluster:
        both = sorted(set(self.admin_role_arns) & set(self.viewer_role_arns))
        if both:
            raise ValueError(f"{both} in both adminRoleArns and viewerRoleArns; a role gets one access entry")
        if self.mode == "eks":
            if self.system_nodes is None or self.node_pools is None:
                raise ValueError("systemNodes and nodePools are required when mode is 'eks'")
            if self.version not in SUPPORTED_CLUSTER_VERSIONS:
                raise ValueError(
                    f"version {self.version!r} is not a supported EKS version; supported: "
                    f"{', '.join(SUPPORTED_CLUSTER_VERSIONS)} (first add the version's addon row to "
                    "infra/schema/versions.py)"
                )
            if self.endpoint_public_access and not self.public_access_cidrs:
                raise ValueError("endpointPublicAccess is true but publicAccessCidrs is empty; list CIDRs")
        return self


class Network(Model):
    """The VPC (eks mode)."""

    cidr: Cidr = Field(description="VPC CIDR, /16 to /20; subnets are carved from it.")
    availability_zones: list[str] = Field(
        min_length=2, max_length=6, description="AZs to spread subnets over (at least 2)."
    )
    nat_gateways: Literal["single", "perAz"] = Field(
        description="`single` (cheap, one AZ's NAT is a shared egress point) or `perAz` (resilient)."
    )
    interface_endpoints: list[Literal["ecr.api", "ecr.dkr", "sts", "logs", "ec2", "elasticloadbalancing"]] = Field(
        default_factory=list, description="Interface VPC endpoints to create (private AWS API access)."
    )

    @field_validator("cidr")
    @classmethod
    def _prefix(cls, value: str) -> str:
        prefix = ipaddress.ip_network(value).prefixlen
        if not 16 <= prefix <= 20:
            raise ValueError(f"{value!r} has prefix /{prefix}; allowed /16 to /20")
        return value

    @field_validator("availability_zones")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists an availability zone twice")
        return value


class Storage(Model):
    """The object store for training snapshots, models and prediction exports."""

    bucket_name: str | None = Field(
        default=None,
        description="Bucket name; eks mode: omit for a generated name; existing mode: required.",
    )
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="S3-compatible endpoint (existing mode, e.g. MinIO); omit for AWS S3.",
    )
    training_snapshot_expiration_days: int = Field(
        default=90, ge=1, le=3650, description="Delete objects under `training/` this many days old."
    )
    noncurrent_version_expiration_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Delete overwritten/deleted object versions after this many days.",
    )
    force_destroy: bool = Field(default=False, description="Let `pulumi destroy` delete a non-empty bucket.")

    @field_validator("bucket_name")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET_RE.match(value):
            raise ValueError(f"{value!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
        return value


class Ecr(Model):
    """The ECR repository (eks mode). Tags are always immutable and images scanned on push."""

    repository_name: str = Field(
        default=PROJECT, pattern=r"^[a-z0-9][a-z0-9._/-]{1,255}$", description="Repository name."
    )
    untagged_expiry_days: int = Field(default=7, ge=1, le=365, description="Expire untagged images after this.")
    keep_tagged_images: int = Field(
        default=50,
        ge=10,
        le=1000,
        description="Keep the newest this many tagged images, expire older ones; must cover every image a "
        "stack runs or may roll back to (promoted registries hold only promoted images).",
    )
    force_delete: bool = Field(default=False, description="Let `pulumi destroy` delete a repository with images.")
