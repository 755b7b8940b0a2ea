"""The S3 bucket for training snapshots, models and prediction exports.

Private and encrypted by default: versioning (a bad write can be rolled back), SSE-KMS with a bucket
key, every public-access switch on, ACLs disabled (bucket owner enforced), TLS-only access, and a
lifecycle that expires old training snapshots and old object versions.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.policies import tls_only_bucket_policy
from infra.aws.stateful import stateful_options
from infra.naming import PREFIX_TRAINING
from infra.schema import Protection
from infra.schema import Storage as StorageConfig


def lifecycle_rules(cfg: StorageConfig) -> list[dict[str, Any]]:
    """Lifecycle rules, as plain data (snake_case keys of ``BucketLifecycleConfigurationRuleArgs``).

    Only ``training/`` expires: snapshots are reproducible from the source DB, models are not.
    """
    return [
        {
            "id": "expire-training-snapshots",
            "status": "Enabled",
            "filter": {"prefix": PREFIX_TRAINING},
            "expiration": {"days": cfg.training_snapshot_expiration_days},
        },
        {
            "id": "expire-noncurrent-versions",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "noncurrent_version_expiration": {"noncurrent_days": cfg.noncurrent_version_expiration_days},
            "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
        },
    ]


def _rule_args(rule: dict[str, Any]) -> aws.s3.BucketLifecycleConfigurationRuleArgs:
    s3 = aws.s3
    return s3.BucketLifecycleConfigurationRuleArgs(
        id=rule["id"],
        status=rule["status"],
        filter=s3.BucketLifecycleConfigurationRuleFilterArgs(**rule["filter"]),
        expiration=(
            s3.BucketLifecycleConfigurationRuleExpirationArgs(**rule["expiration"]) if "expiration" in rule else None
        ),
        noncurrent_version_expiration=(
            s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(**rule["noncurrent_version_expiration"])
            if "noncurrent_version_expiration" in rule
            else None
        ),
        abort_incomplete_multipart_upload=(
            s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                **rule["abort_incomplete_multipart_upload"]
            )
            if "abort_incomplete_multipart_upload" in rule
            else None
        ),
    )


class Storage(pulumi.ComponentResource):
    """KMS key, bucket and its versioning/encryption/public-access/ownership/lifecycle/policy."""

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        cfg: StorageConfig,
        bucket_prefix: str,
        protection: Protection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:aws:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        protection = protection or Protection()
        key = aws.kms.Key(
            f"{name}-key",
            description="SSE-KMS for the purchase-classifier bucket",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=stateful_options(protection, self),
        )
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=cfg.bucket_name,
            bucket_prefix=None if cfg.bucket_name else bucket_prefix,
            force_destroy=cfg.force_destroy,
            opts=stateful_options(protection, self),
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=(
                        aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                            sse_algorithm="aws:kms", kms_master_key_id=key.arn
                        )
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[_rule_args(r) for r in lifecycle_rules(cfg)],
            # Noncurrent-version rules need versioning in place first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_block]),
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        self.register_outputs(
            {"bucketName": self.bucket_name, "bucketArn": self.bucket_arn, "kmsKeyArn": self.kms_key_arn}
        )
