"""The ECR repository for the one classifier image.

Tags are immutable (a pushed tag can never point at other bytes), images are scanned on push and
encrypted with KMS, untagged images (superseded builds) expire, of the tagged images the newest
``keepTaggedImages`` are kept, and the image the stack runs is never expired, however old.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.stateful import stateful_options
from infra.images import digest_tag
from infra.schema import Ecr, Protection

RUNNING_IMAGE_COUNT = 9999
"""The running-image rule's count: more manifests than one image (an index and its platform images)
can ever have, so that rule selects the image without ever expiring any of it."""


def lifecycle_policy(
    untagged_expiry_days: int, keep_tagged_images: int, running_digest: str | None = None
) -> dict[str, Any]:
    """ECR lifecycle policy: the image the stack runs is kept; untagged images expire after
    ``untagged_expiry_days``; tagged images beyond the newest ``keep_tagged_images`` expire.

    Promotion and rollback need the image each stack runs and the ones before it. Builds are tagged
    (the git SHA) and promotion tags every image it copies or records (``digest-<hex>``, see
    :func:`infra.images.digest_tag`), so a registry keeps every image pushed in its last
    ``keep_tagged_images`` builds or promotions: the rollback horizon. Counting (not age) means a
    registry that receives no new image never loses the one it runs.

    ``running_digest`` (the stack's ``imageDigest``) adds a rule before the count that selects that
    image by its tag prefix (the index and its ``digest-<hex>.<n>`` manifests) and never expires it:
    in ECR, an image matched by a rule's tags cannot be expired by any lower-priority rule, so the
    running image survives even when more than ``keep_tagged_images`` newer ones were pushed (a stack
    that stopped following builds). ``tests/support/ecr_lifecycle.py`` evaluates these rules.
    """
    if untagged_expiry_days < 1:
        raise ValueError(f"untagged_expiry_days must be >= 1, got {untagged_expiry_days}")
    if keep_tagged_images < 2:
        raise ValueError(
            f"keep_tagged_images must keep the running image and one to roll back to, got {keep_tagged_images}"
        )
    rules: list[dict[str, Any]] = [
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
    if running_digest is not None:
        # Before the count rule (which it shields the running image from); the untagged rule above
        # selects other images, so their order does not matter.
        rules.append(
            {
                "rulePriority": 2,
                "description": f"Keep the image this stack runs ({running_digest})",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPrefixList": [digest_tag(running_digest)],
                    "countType": "imageCountMoreThan",
                    "countNumber": RUNNING_IMAGE_COUNT,
                },
                "action": {"type": "expire"},
            }
        )
    rules.append(
        {
            "rulePriority": 3,
            "description": f"Keep the newest {keep_tagged_images} tagged images (running and rollback targets)",
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": ["*"],
                "countType": "imageCountMoreThan",
                "countNumber": keep_tagged_images,
            },
            "action": {"type": "expire"},
        }
    )
    return {"rules": rules}


class Registry(pulumi.ComponentResource):
    """ECR repository plus its lifecycle policy."""

    repository_url: pulumi.Output[str]
    repository_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        cfg: Ecr,
        protection: Protection | None = None,
        opts: pulumi.ResourceOptions | None = None,
        *,
        running_digest: str | None = None,
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
            policy=json.dumps(lifecycle_policy(cfg.untagged_expiry_days, cfg.keep_tagged_images, running_digest)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.repository_url = repo.repository_url
        self.repository_arn = repo.arn
        self.register_outputs({"repositoryUrl": self.repository_url, "repositoryArn": self.repository_arn})
