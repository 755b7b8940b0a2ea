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


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def least_privilege_violations(policy: Policy) -> list[str]:
    """Why an identity policy is too broad (empty when it is fine).

    Rules: no ``Allow`` of a service wildcard action (``s3:*``, ``*``), no ``Allow`` on resource
    ``*``, no ``NotAction``/``NotResource`` allows. ``Deny`` statements are not grants and are skipped.
    """
    problems = []
    for i, st in enumerate(policy.get("Statement", [])):
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st or "NotResource" in st:
            problems.append(f"statement {i}: Allow with NotAction/NotResource")
        for action in _as_list(st.get("Action", [])):
            if action == "*" or action.endswith(":*"):
                problems.append(f"statement {i}: wildcard action {action!r}")
        if "Principal" not in st:  # identity policy: resources must be scoped
            for resource in _as_list(st.get("Resource", [])):
                if resource == "*" or resource.endswith(":*"):
                    problems.append(f"statement {i}: wildcard resource {resource!r}")
    return problems


WRITE_ACTIONS = frozenset({"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"})


def write_actions(policy: Policy) -> set[str]:
    """S3 actions in ``Allow`` statements that change objects (for "serving cannot write")."""
    found: set[str] = set()
    for st in policy.get("Statement", []):
        if st.get("Effect") == "Allow":
            found |= {a for a in _as_list(st.get("Action", [])) if a in WRITE_ACTIONS or a.startswith("s3:Put")}
    return found
