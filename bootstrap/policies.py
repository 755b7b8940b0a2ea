"""IAM documents of the CI roles, as pure functions (tested without Pulumi, checked like the main program's).

Four roles per account, each assumable only through GitHub's OIDC provider by this repository's exact
subject claims (``StringEquals``, never ``StringLike``): a workflow of another repository, or of this
repository outside the named environment or branch, gets no credentials.

============== ================================================= =====================================
role           subject (``token.actions.githubusercontent.com``)  may
============== ================================================= =====================================
ci-preview     ``repo:R:environment:<env>-preview``              read (AWS ReadOnlyAccess, minus data)
ci-deployer    ``repo:R:environment:<env>``                      create and change the stack
ci-image-push  dev: ``repo:R:ref:refs/heads/main``;               push and pull this account's image
               others: ``repo:R:environment:<env>``              repository (promotion writes here)
ci-image-pull  ``repo:R:environment:<next env>``                 pull this account's image repository
                                                                 (the next stack's promotion reads here)
============== ================================================= =====================================
"""

from __future__ import annotations

from typing import Any

Policy = dict[str, Any]
VERSION = "2012-10-17"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
GITHUB_OIDC_URL = f"https://{GITHUB_OIDC_HOST}"
STS_AUDIENCE = "sts.amazonaws.com"
CI_ROLE_PREFIX = "ci-"

ECR_PULL_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:DescribeImages",
    "ecr:GetDownloadUrlForLayer",
]
ECR_PUSH_ACTIONS = ["ecr:CompleteLayerUpload", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart"]

DEPLOY_IAM_ACTIONS = [
    "iam:AttachRolePolicy",
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:CreateRole",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:ListPolicyVersions",
    "iam:ListRolePolicies",
    "iam:PassRole",
    "iam:PutRolePolicy",
    "iam:TagPolicy",
    "iam:TagRole",
    "iam:UntagPolicy",
    "iam:UntagRole",
    "iam:UpdateAssumeRolePolicy",
]
"""What the main program does with IAM: its workload, node, cluster and Karpenter roles and policies.
Everything else it creates (VPC, EKS, S3, KMS, ECR, logs, SQS) comes from AWS's PowerUserAccess."""

PREVIEW_DENIED_DATA_READS = [
    "s3:GetObject",
    "s3:GetObjectVersion",
    "secretsmanager:GetSecretValue",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "kms:Decrypt",
]
"""ReadOnlyAccess also reads data; a preview needs configuration only (training data, models and
secrets stay out of a pull request's reach)."""

MANAGED_POLICIES = {
    "preview": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
    "deployer": ["arn:aws:iam::aws:policy/PowerUserAccess"],
}


def subject(repository: str, *, environment: str | None = None, ref: str | None = None) -> str:
    """A GitHub OIDC ``sub`` claim: a job in an environment, or a job on a ref without one."""
    if (environment is None) == (ref is None):
        raise ValueError("give exactly one of environment or ref")
    return f"repo:{repository}:environment:{environment}" if environment else f"repo:{repository}:ref:{ref}"


def github_trust_policy(provider_arn: str, subjects: list[str]) -> Policy:
    """Trust GitHub's OIDC tokens for exactly ``subjects`` (audience STS)."""
    if not subjects or any("*" in s for s in subjects):
        raise ValueError(f"trust needs exact subject claims, got {subjects!r}")
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": sorted(subjects),
                    }
                },
            }
        ],
    }


def ecr_policy(repository_arn: str, *, push: bool) -> Policy:
    """Log in to the registry and pull (and with ``push``, push) the one image repository."""
    actions = ECR_PULL_ACTIONS + (ECR_PUSH_ACTIONS if push else [])
    return {
        "Version": VERSION,
        "Statement": [
            # GetAuthorizationToken is registry-wide: AWS cannot scope it to a repository.
            {"Sid": "RegistryLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {"Sid": "ImageRepository", "Effect": "Allow", "Action": sorted(actions), "Resource": [repository_arn]},
        ],
    }


def deployer_iam_policy(account_id: str) -> Policy:
    """IAM for the main program's roles and policies, never for the CI roles themselves."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "StackRolesAndPolicies",
                "Effect": "Allow",
                "Action": DEPLOY_IAM_ACTIONS,
                "Resource": [f"arn:aws:iam::{account_id}:role/*", f"arn:aws:iam::{account_id}:policy/*"],
            },
            {
                "Sid": "ServiceLinkedRoles",
                "Effect": "Allow",
                "Action": ["iam:CreateServiceLinkedRole"],
                "Resource": [f"arn:aws:iam::{account_id}:role/aws-service-role/*"],
            },
            {
                # No escalation: the deploy role cannot change its own or the other CI roles' trust or
                # permissions, nor the OIDC provider; only the bootstrap program (run by an admin) can.
                "Sid": "NotTheCiRoles",
                "Effect": "Deny",
                "Action": ["iam:*"],
                "Resource": [
                    f"arn:aws:iam::{account_id}:role/{CI_ROLE_PREFIX}*",
                    f"arn:aws:iam::{account_id}:oidc-provider/{GITHUB_OIDC_HOST}",
                ],
            },
        ],
    }


def preview_deny_policy() -> Policy:
    """The data reads ReadOnlyAccess would allow and a preview never needs."""
    return {
        "Version": VERSION,
        "Statement": [{"Sid": "NoDataReads", "Effect": "Deny", "Action": PREVIEW_DENIED_DATA_READS, "Resource": "*"}],
    }
