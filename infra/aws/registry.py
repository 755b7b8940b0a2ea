"""The ECR repository for the one classifier image.

Tags are immutable (a pushed tag can never point at other bytes), images are scanned on push and
encrypted with KMS, untagged images (superseded builds) expire, and of the tagged images the newest
``keepTaggedImages`` are kept.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.stateful import stateful_options
from infra.schema import Ecr, Protection


def lifecycle_policy(untagged_expiry_days: int, keep_tagged_images: int) -> dict[str, Any]:
    """ECR lifecycle policy: untagged images expire after ``untagged_expiry_days``; tagged images
    beyond the newest ``keep_tagged_images`` expire.

    Promotion and rollback need the image each stack runs and the ones before it. Builds are tagged
    (the git SHA) and promotion copies an image into the next stack's registry, so a registry keeps
    every image pushed in its last ``keep_tagged_images`` builds or promotions: the rollback horizon.
    Counting (not age) means a registry that receives no new image never loses the one it runs.
    """
    if untagged_expiry_days < 1:
        raise ValueError(f"untagged_expiry_days must be >= 1, got {untagged_expiry_days}")
    if keep_tagged_images < 2:
        raise ValueError(
            f"keep_tagged_images must keep the running image and one to roll back to, got {keep_tagged_images}"
        )
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
            },
            {
                "rulePriority": 2,
                "description": f"Keep the newest {keep_tagged_images} tagged images (running and rollback targets)",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPatternList": ["*"],
                    "countType": "imageCountMoreThan",
                    "countNumber": keep_tagged_images,
                },
                "action": {"type": "expire"},
            },
        ]
    }


class Registry(pulumi.ComponentResource):
    """ECR repository plus its lifecycle policy."""

    repository_url: pulumi.Output[str]
    repository_arn: pulumi.Output[str]

    def __init__(
        self, name: str, cfg: Ecr, protection: Protection | None = None, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("purchase-classifier:aws:Registry", name, None, opts)
        repo = aws.ecr.Repository(
            f"{name}-repo",
            name=cfg.repository_name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")],
            force_delete=cfg.force_delete,
            opts=stateful_options(protection or Protection(), self),
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=repo.name,
            policy=json.dumps(lifecycle_policy(cfg.untagged_expiry_days, cfg.keep_tagged_images)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.repository_url = repo.repository_url
        self.repository_arn = repo.arn
        self.register_outputs({"repositoryUrl": self.repository_url, "repositoryArn": self.repository_arn})
