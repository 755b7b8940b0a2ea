"""The ECR repository for the one classifier image.

Tags are immutable (a pushed tag can never point at other bytes), images are scanned on push and
encrypted with KMS, and untagged images (superseded builds) expire.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import Ecr


def lifecycle_policy(untagged_expiry_days: int) -> dict[str, Any]:
    """ECR lifecycle policy expiring untagged images after ``untagged_expiry_days``.

    Images referenced by digest from a stack are normally also tagged by the build (the git SHA), so
    only orphaned, untagged pushes are expired.
    """
    if untagged_expiry_days < 1:
        raise ValueError(f"untagged_expiry_days must be >= 1, got {untagged_expiry_days}")
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"Expire untagged images after {untagged_expiry_days} days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": untagged_expiry_days,
                },
                "action": {"type": "expire"},
            }
        ]
    }


class Registry(pulumi.ComponentResource):
    """ECR repository plus its lifecycle policy."""

    repository_url: pulumi.Output[str]
    repository_arn: pulumi.Output[str]

    def __init__(self, name: str, cfg: Ecr, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("purchase-classifier:aws:Registry", name, None, opts)
        repo = aws.ecr.Repository(
            f"{name}-repo",
            name=cfg.repository_name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")],
            force_delete=cfg.force_delete,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=repo.name,
            policy=json.dumps(lifecycle_policy(cfg.untagged_expiry_days)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.repository_url = repo.repository_url
        self.repository_arn = repo.arn
        self.register_outputs({"repositoryUrl": self.repository_url, "repositoryArn": self.repository_arn})
