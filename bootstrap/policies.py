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

**No escalation through ci-deployer.** The stack needs to create IAM roles (cluster, nodes,
Karpenter, workloads), and a role that can create roles can make itself an administrator unless two
things hold, which :func:`deployer_iam_policy` makes conditions of every grant:

- a role the deployer creates or changes lives under :data:`WORKLOAD_ROLE_PATH` and carries the
  permissions boundary :data:`WORKLOAD_BOUNDARY_NAME` (``iam:PermissionsBoundary`` on CreateRole,
  Put/Attach/Detach/DeleteRolePolicy and PutRolePermissionsBoundary); nothing removes a boundary;
- the boundary (:func:`workload_boundary_policy`), the CI roles and the OIDC provider are out of its
  reach (``ci-*``), so it cannot widen the ceiling it is held to.

Whatever it attaches (even ``AdministratorAccess``) is then capped by the boundary: no IAM beyond
instance profiles and passing the stack's own roles, no Organizations or account settings.
"""

from __future__ import annotations

from typing import Any

from infra.naming import WORKLOAD_ROLE_PATH, workload_boundary_arn

Policy = dict[str, Any]
VERSION = "2012-10-17"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
GITHUB_OIDC_URL = f"https://{GITHUB_OIDC_HOST}"
STS_AUDIENCE = "sts.amazonaws.com"
CI_ROLE_PREFIX = "ci-"
SPOT_SERVICE = "spot.amazonaws.com"
SPOT_SERVICE_LINKED_ROLE = "AWSServiceRoleForEC2Spot"

ECR_PULL_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:DescribeImages",
    "ecr:GetDownloadUrlForLayer",
]
ECR_PUSH_ACTIONS = ["ecr:CompleteLayerUpload", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart"]

DEPLOY_BOUNDED_ROLE_ACTIONS = [
    "iam:AttachRolePolicy",
    "iam:CreateRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePermissionsBoundary",
    "iam:PutRolePolicy",
]
"""The role actions AWS evaluates ``iam:PermissionsBoundary`` for: allowed only with the boundary."""
DEPLOY_ROLE_ACTIONS = [
    "iam:DeleteRole",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:ListRolePolicies",
    "iam:PassRole",
    "iam:TagRole",
    "iam:UntagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateRole",
    "iam:UpdateRoleDescription",
]
DEPLOY_POLICY_ACTIONS = [
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListPolicyVersions",
    "iam:TagPolicy",
    "iam:UntagPolicy",
]
"""What the main program does with IAM (its workload, node, cluster and Karpenter roles and policies),
all under :data:`WORKLOAD_ROLE_PATH`. Everything else it creates (VPC, EKS, S3, KMS, ECR, logs, SQS)
comes from AWS's PowerUserAccess, which grants no IAM action but service-linked roles."""

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
    """IAM for the main program's roles and policies under the workload path, each role bounded."""
    roles = f"arn:aws:iam::{account_id}:role{WORKLOAD_ROLE_PATH}*"
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "StackRolesOnlyWithTheBoundary",
                "Effect": "Allow",
                "Action": DEPLOY_BOUNDED_ROLE_ACTIONS,
                "Resource": [roles],
                "Condition": {"StringEquals": {"iam:PermissionsBoundary": workload_boundary_arn(account_id)}},
            },
            {"Sid": "StackRoles", "Effect": "Allow", "Action": DEPLOY_ROLE_ACTIONS, "Resource": [roles]},
            {
                "Sid": "StackPolicies",
                "Effect": "Allow",
                "Action": DEPLOY_POLICY_ACTIONS,
                "Resource": [f"arn:aws:iam::{account_id}:policy{WORKLOAD_ROLE_PATH}*"],
            },
            {
                "Sid": "ServiceLinkedRoles",
                "Effect": "Allow",
                "Action": ["iam:CreateServiceLinkedRole"],
                "Resource": [f"arn:aws:iam::{account_id}:role/aws-service-role/*"],
            },
            {
                # A boundary, once set, stays: removing it would lift the ceiling.
                "Sid": "NoBoundaryRemoval",
                "Effect": "Deny",
                "Action": ["iam:DeleteRolePermissionsBoundary", "iam:DeleteUserPermissionsBoundary"],
                "Resource": "*",
            },
            {
                # The deploy role cannot change its own or the other CI roles' trust or permissions,
                # the boundary, nor the OIDC provider; only the bootstrap program (run by an admin) can.
                "Sid": "NotTheCiRolesNorTheBoundary",
                "Effect": "Deny",
                "Action": ["iam:*"],
                "Resource": [
                    f"arn:aws:iam::{account_id}:role/{CI_ROLE_PREFIX}*",
                    f"arn:aws:iam::{account_id}:policy/{CI_ROLE_PREFIX}*",
                    f"arn:aws:iam::{account_id}:oidc-provider/{GITHUB_OIDC_HOST}",
                ],
            },
        ],
    }


WORKLOAD_IAM_ACTIONS = [
    "iam:AddRoleToInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:CreateServiceLinkedRole",
    "iam:DeleteInstanceProfile",
    "iam:GetInstanceProfile",
    "iam:GetRole",
    "iam:ListInstanceProfiles",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:TagInstanceProfile",
]
"""The IAM a workload role may ever use: Karpenter's instance profiles for its node role, and the
EKS service-linked roles. Passing a role is allowed separately, for the stack's own roles only."""


def workload_boundary_policy(account_id: str) -> Policy:
    """The ceiling of every role the deployer creates: everything but identity, account and
    organization changes, plus instance profiles and passing the stack's own roles.

    A boundary grants nothing by itself (a role gets the intersection with its own policies), so
    unlike an identity policy it is written as the widest set allowed, in PowerUserAccess's shape.
    """
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "EverythingButIdentity",
                "Effect": "Allow",
                "NotAction": ["iam:*", "organizations:*", "account:*", "sts:AssumeRole"],
                "Resource": "*",
            },
            {"Sid": "WorkloadIam", "Effect": "Allow", "Action": WORKLOAD_IAM_ACTIONS, "Resource": "*"},
            {
                "Sid": "PassOnlyTheStacksRoles",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": [f"arn:aws:iam::{account_id}:role{WORKLOAD_ROLE_PATH}*"],
            },
        ],
    }


def preview_deny_policy() -> Policy:
    """The data reads ReadOnlyAccess would allow and a preview never needs."""
    return {
        "Version": VERSION,
        "Statement": [{"Sid": "NoDataReads", "Effect": "Deny", "Action": PREVIEW_DENIED_DATA_READS, "Resource": "*"}],
    }
