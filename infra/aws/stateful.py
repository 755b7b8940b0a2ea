"""What every stateful AWS resource shares: its protection, and encrypted log groups.

Stateful means its loss loses data or access: the EKS cluster, KMS keys, the bucket, the ECR
repository. ``protection.protect``/``retainOnDelete`` in the stack config decide how they are guarded.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.policies import key_policy_for_logs
from infra.schema import Protection


def stateful_options(protection: Protection, parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
    """Options of a stateful resource: ``protect`` and ``retain_on_delete`` as the stack says."""
    return pulumi.ResourceOptions(
        parent=parent, protect=protection.protect, retain_on_delete=protection.retain_on_delete, **extra
    )


def encrypted_log_group(
    name: str,
    log_group_name: pulumi.Input[str],
    retention_days: int,
    region: str,
    account_id: pulumi.Input[str],
    protection: Protection,
    parent: pulumi.Resource,
) -> aws.cloudwatch.LogGroup:
    """A log group encrypted with its own KMS key (rotated; CloudWatch Logs may use it, nothing else)."""
    key = aws.kms.Key(
        f"{name}-key",
        description=f"CloudWatch Logs encryption ({name})",
        enable_key_rotation=True,
        deletion_window_in_days=30,
        policy=pulumi.Output.from_input(account_id).apply(lambda a: json.dumps(key_policy_for_logs(a, region))),
        opts=stateful_options(protection, parent),
    )
    return aws.cloudwatch.LogGroup(
        name,
        name=log_group_name,
        retention_in_days=retention_days,
        kms_key_id=key.arn,
        # The audit trail of the control plane and the VPC: kept, like the key that encrypts it.
        opts=stateful_options(protection, parent),
    )
