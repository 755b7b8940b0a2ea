"""IAM and resource policy documents, as pure functions of ARNs.

Kept apart from the components so every document the program can emit is unit-tested and parsed
for least privilege without Pulumi: each workload gets exactly the bucket prefixes it needs, and no
``Allow`` statement uses ``s3:*`` or a ``*`` resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.naming import (
    PREFIX_MODELS,
    PREFIX_PREDICTIONS,
    PREFIX_TRAINING,
    SA_DASK_WORKER,
    SA_PREDICT,
    SA_REFRESH,
    SA_SERVING,
    SA_TRAIN,
)

Policy = dict[str, Any]
VERSION = "2012-10-17"


@dataclass(frozen=True)
class BucketAccess:
    """Which key prefixes of the bucket a workload may read and write."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


WORKLOAD_ACCESS: dict[str, BucketAccess] = {
    # Refresh writes training snapshots (and lists/reads them to skip unchanged data).
    SA_REFRESH: BucketAccess(read=(PREFIX_TRAINING,), write=(PREFIX_TRAINING,)),
    # Train reads snapshots, reads models (the quality gate compares with LATEST) and writes models.
    SA_TRAIN: BucketAccess(read=(PREFIX_TRAINING, PREFIX_MODELS), write=(PREFIX_MODELS,)),
    # Predict loads the model and may export predictions next to it.
    SA_PREDICT: BucketAccess(read=(PREFIX_MODELS,), write=(PREFIX_PREDICTIONS,)),
    # Workers run train and predict tasks: they read both inputs and write only prediction exports.
    SA_DASK_WORKER: BucketAccess(read=(PREFIX_TRAINING, PREFIX_MODELS), write=(PREFIX_PREDICTIONS,)),
    # Serving only ever loads models.
    SA_SERVING: BucketAccess(read=(PREFIX_MODELS,)),
}
"""Least-privilege bucket access per workload ServiceAccount (the scheduler has none)."""


def assume_role_policy(service: str) -> Policy:
    """Trust policy letting an AWS service (``eks.amazonaws.com``, ``ec2.amazonaws.com``) assume a role."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": ["sts:AssumeRole"],
            }
        ],
    }


def cluster_assume_role_policy() -> Policy:
    """EKS control plane trust; EKS also needs ``sts:TagSession``."""
    policy = assume_role_policy("eks.amazonaws.com")
    policy["Statement"][0]["Action"] = ["sts:AssumeRole", "sts:TagSession"]
    return policy


def pod_identity_trust_policy(account_id: str) -> Policy:
    """Trust for EKS Pod Identity: the agent assumes the role and tags the session with pod data.

    ``aws:SourceAccount`` limits the service principal to requests made on behalf of this account's
    clusters (confused-deputy guard): ``account_id`` is the account the stack deploys into, read from
    the provider at run time, never typed into config.
    """
    if not (len(account_id) == 12 and account_id.isdigit()):
        raise ValueError(f"an AWS account id is 12 digits, got {account_id!r}")
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ],
    }


def bucket_access_policy(bucket_arn: str, kms_key_arn: str, access: BucketAccess) -> Policy:
    """Identity policy for one workload: list/read/write only on its prefixes, KMS only on the bucket key.

    Listing is scoped with the ``s3:prefix`` condition so a reader of ``models/`` cannot enumerate
    ``training/``. Writers get ``PutObject`` and ``AbortMultipartUpload`` (large parquet parts), never
    ``DeleteObject``: versioning plus lifecycle rules do the cleanup.
    """
    if not access.read and not access.write:
        raise ValueError("a workload with no bucket access needs no policy")
    prefixes = sorted(set(access.read) | set(access.write))
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ListOwnPrefixes",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket_arn],
            "Condition": {"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
        }
    ]
    if access.read:
        statements.append(
            {
                "Sid": "ReadObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": [f"{bucket_arn}/{p}*" for p in sorted(access.read)],
            }
        )
    if access.write:
        statements.append(
            {
                "Sid": "WriteObjects",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": [f"{bucket_arn}/{p}*" for p in sorted(access.write)],
            }
        )
    kms_actions = ["kms:Decrypt"]
    if access.write:
        kms_actions.append("kms:GenerateDataKey")
    statements.append({"Sid": "UseBucketKey", "Effect": "Allow", "Action": kms_actions, "Resource": [kms_key_arn]})
    return {"Version": VERSION, "Statement": statements}


def tls_only_bucket_policy(bucket_arn: str) -> Policy:
    """Bucket policy denying any request not made over TLS (a ``Deny``, so its wildcards grant nothing)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def key_policy_for_logs(account_id: str, region: str) -> Policy:
    """KMS key policy: the account administers the key, CloudWatch Logs encrypts this account's
    log groups in ``region`` with it (scoped by the log-group encryption context)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchLogsEncrypts",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                "Action": [
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                    "kms:GenerateDataKey",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:DescribeKey",
                ],
                "Resource": "*",
                "Condition": {
                    "ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{region}:{account_id}:log-group:*"}
                },
            },
        ],
    }


def flow_logs_delivery_policy(log_group_arn: str) -> Policy:
    """What the VPC flow logs service may do with its one log group."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DeliverFlowLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            }
        ],
    }


def interruption_queue_policy(queue_arn: str) -> Policy:
    """Karpenter's interruption queue: EventBridge and SQS may send to it; nothing without TLS."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "EventBridgeSends",
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


def karpenter_controller_policy(
    *, region: str, account_id: str, cluster_name: str, node_role_arn: str, queue_arn: str
) -> Policy:
    """The Karpenter controller's identity policy (Karpenter v1), as terraform-aws-eks's karpenter
    module and Karpenter's own CloudFormation write it.

    Every write is scoped to this region and to resources tagged for this cluster and a NodePool;
    the statements on resource ``*`` hold only read actions (``Describe*``/``Get*``), which EC2 and
    the pricing API do not scope by resource.
    """
    ec2 = f"arn:aws:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    request_owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    created = [f"{ec2}:*:{kind}/*" for kind in _KARPENTER_CREATED]
    profile = f"arn:aws:iam::{account_id}:instance-profile/*"
    region_tag = "topology.kubernetes.io/region"
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "AllowScopedEC2InstanceAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": [
                    f"{ec2}::image/*",
                    f"{ec2}::snapshot/*",
                    f"{ec2}:*:security-group/*",
                    f"{ec2}:*:subnet/*",
                    f"{ec2}:*:capacity-reservation/*",
                ],
            },
            {
                "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": [f"{ec2}:*:launch-template/*"],
                "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            },
            {
                "Sid": "AllowScopedEC2InstanceActionsWithTags",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                "Resource": created,
                "Condition": {
                    "StringEquals": request_owned | {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceCreationTagging",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags"],
                "Resource": created,
                "Condition": {
                    "StringEquals": request_owned
                    | {
                        "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                    },
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceTagging",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags"],
                "Resource": [f"{ec2}:*:instance/*"],
                "Condition": {
                    "StringEquals": owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            },
            {
                "Sid": "AllowScopedDeletion",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
                "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            },
            {
                "Sid": "AllowRegionalReadActions",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeAvailabilityZones",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                ],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "AllowSSMReadActions",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter"],
                "Resource": [f"arn:aws:ssm:{region}::parameter/aws/service/*"],
            },
            {"Sid": "AllowPricingReadActions", "Effect": "Allow", "Action": ["pricing:GetProducts"], "Resource": "*"},
            {
                "Sid": "AllowInterruptionQueueActions",
                "Effect": "Allow",
                "Action": ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                "Resource": [queue_arn],
            },
            {
                "Sid": "AllowPassingInstanceRole",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": [node_role_arn],
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            {
                "Sid": "AllowScopedInstanceProfileCreationActions",
                "Effect": "Allow",
                "Action": ["iam:CreateInstanceProfile"],
                "Resource": [profile],
                "Condition": {
                    "StringEquals": request_owned
                    | {"aws:RequestTag/eks:eks-cluster-name": cluster_name, f"aws:RequestTag/{region_tag}": region},
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileTagActions",
                "Effect": "Allow",
                "Action": ["iam:TagInstanceProfile"],
                "Resource": [profile],
                "Condition": {
                    "StringEquals": owned
                    | request_owned
                    | {
                        f"aws:ResourceTag/{region_tag}": region,
                        f"aws:RequestTag/{region_tag}": region,
                        "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                    },
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileActions",
                "Effect": "Allow",
                "Action": [
                    "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile",
                ],
                "Resource": [profile],
                "Condition": {
                    "StringEquals": owned | {f"aws:ResourceTag/{region_tag}": region},
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowInstanceProfileReadActions",
                "Effect": "Allow",
                "Action": ["iam:GetInstanceProfile"],
                "Resource": [profile],
            },
            {
                # The instance-profile garbage collector lists every profile; IAM cannot scope a List.
                "Sid": "AllowUnscopedInstanceProfileListAction",
                "Effect": "Allow",
                "Action": ["iam:ListInstanceProfiles"],
                "Resource": "*",
            },
            {
                "Sid": "AllowAPIServerEndpointDiscovery",
                "Effect": "Allow",
                "Action": ["eks:DescribeCluster"],
                "Resource": [f"arn:aws:eks:{region}:{account_id}:cluster/{cluster_name}"],
            },
        ],
    }


_KARPENTER_CREATED = ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
"""EC2 resource kinds Karpenter creates (and so may tag at creation)."""

UNSCOPABLE_ACTIONS = frozenset(
    {
        "ec2:DescribeAvailabilityZones",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSpotPriceHistory",
        "ec2:DescribeSubnets",
        "ecr:GetAuthorizationToken",
        "iam:ListInstanceProfiles",
        "pricing:GetProducts",
    }
)
"""Read actions AWS does not scope by resource (the Service Authorization Reference lists no
resource type for them): the only ones an identity policy may allow on resource ``*``."""


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _is_wildcard_resource(resource: str) -> bool:
    """``*``, or an ARN whose resource part is only ``*`` (``arn:aws:s3:::*``): every resource of a
    service. ``<log group arn>:*`` (its streams) or ``.../prefix/*`` are scoped."""
    parts = resource.split(":", 5)
    return resource == "*" or (len(parts) == 6 and parts[5] == "*")


def least_privilege_violations(policy: Policy) -> list[str]:
    """Why an identity policy is too broad (empty when it is fine).

    Identity policies (no ``Principal``): no wildcard action (``s3:*``, ``*``, ``ec2:Describe*``),
    no ``NotAction``/``NotResource``, and resource ``*`` (or a whole service, ``arn:aws:s3:::*``) only
    for :data:`UNSCOPABLE_ACTIONS`. Resource policies (a key's, a queue's) are attached to the one
    resource they govern and name their principals: they must not allow everyone (``*``). ``Deny``
    statements are not grants and are skipped.
    """
    problems = []
    for i, st in enumerate(policy.get("Statement", [])):
        if st.get("Effect") != "Allow":
            continue
        if "Principal" in st:
            principal = st["Principal"]
            if principal == "*" or (isinstance(principal, dict) and "*" in _as_list(principal.get("AWS", []))):
                problems.append(f"statement {i}: Allow to every principal ('*')")
            continue
        if "NotAction" in st or "NotResource" in st:
            problems.append(f"statement {i}: Allow with NotAction/NotResource")
        actions = _as_list(st.get("Action", []))
        for action in actions:
            if "*" in action:
                problems.append(f"statement {i}: wildcard action {action!r}")
        scopable = [a for a in actions if a not in UNSCOPABLE_ACTIONS]
        if scopable:
            for resource in _as_list(st.get("Resource", [])):
                if _is_wildcard_resource(resource):
                    problems.append(f"statement {i}: {', '.join(scopable)} on wildcard resource {resource!r}")
    return problems


WRITE_ACTIONS = frozenset({"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"})


def write_actions(policy: Policy) -> set[str]:
    """S3 actions in ``Allow`` statements that change objects (for "serving cannot write")."""
    found: set[str] = set()
    for st in policy.get("Statement", []):
        if st.get("Effect") == "Allow":
            found |= {a for a in _as_list(st.get("Action", [])) if a in WRITE_ACTIONS or a.startswith("s3:Put")}
    return found
