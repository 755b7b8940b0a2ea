"""Declare one account's CI access: GitHub's OIDC provider and the roles the workflows assume.

Run once per account by an administrator (``pulumi -C bootstrap up`` on stack dev, staging, prod)
before the first deploy; the role ARNs it exports become the GitHub environments' variables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws
import pulumi_github as github
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from bootstrap.github import GithubDelivery
from bootstrap.policies import (
    CI_ROLE_PREFIX,
    GITHUB_OIDC_URL,
    MANAGED_POLICIES,
    SPOT_SERVICE,
    STS_AUDIENCE,
    deployer_iam_policy,
    ecr_policy,
    github_trust_policy,
    preview_deny_policy,
    subject,
    workload_boundary_policy,
)
from infra.naming import WORKLOAD_BOUNDARY_NAME

NAMESPACE = "purchase-classifier-bootstrap"
TOKEN_PREFIX = "purchase-classifier-bootstrap:ci"
Environment = Literal["dev", "staging", "prod"]


class BootstrapConfig(BaseModel):
    """Everything under ``purchase-classifier-bootstrap:`` in a bootstrap stack file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    environment: Environment = Field(description="The environment whose account this stack sets up.")
    repository: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        description="GitHub `owner/name`: the only repository whose workflows may assume the roles.",
    )
    ecr_repository_name: str = Field(
        default="purchase-classifier", description="The main stack's ECR repository in this account."
    )
    promotion_target: Environment | None = Field(
        default=None, description="The environment that promotes images out of this account (image-pull role)."
    )
    spot_service_linked_role: Literal["create", "exists"] = Field(
        default="create",
        description=(
            "The account's EC2 Spot service-linked role (AWSServiceRoleForEC2Spot), which Karpenter needs for "
            "its first spot launch and cannot create: `create` it here, or `exists` when the account already has "
            "one (`aws iam get-role --role-name AWSServiceRoleForEC2Spot` succeeds; creating it again fails)."
        ),
    )
    github_repository_id: int | None = Field(
        default=None,
        description=(
            "The repository's numeric id (`gh api repos/<owner>/<name> --jq .id`). Set, this stack also creates "
            "the environment's runner groups and GitHub environments (needs GITHUB_TOKEN of an organization "
            "owner); unset, they are created by hand."
        ),
    )
    reviewer_team_ids: list[int] = Field(
        default_factory=list, description="GitHub team ids whose approval a staging or prod deploy needs."
    )
    digest_app_id: str | None = Field(default=None, description="The digest-recorder GitHub App's id.")

    @model_validator(mode="after")
    def _reviewed(self) -> BootstrapConfig:
        if self.github_repository_id is not None and self.environment != "dev" and not self.reviewer_team_ids:
            raise ValueError(f"reviewerTeamIds: {self.environment} deploys need reviewers; name at least one team")
        return self


def load_config() -> BootstrapConfig:
    config = pulumi.Config(NAMESPACE)
    keys = ("environment", "repository", "ecrRepositoryName", "promotionTarget", "spotServiceLinkedRole", "digestAppId")
    raw: dict[str, object] = {key: config.get(key) for key in keys}
    raw["githubRepositoryId"] = config.get_int("githubRepositoryId")
    raw["reviewerTeamIds"] = config.get_object("reviewerTeamIds")
    try:
        return BootstrapConfig.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{NAMESPACE}:{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise pulumi.RunError(f"bootstrap stack {pulumi.get_stack()!r}: {problems}") from exc


@dataclass(frozen=True)
class RoleSpec:
    name: str
    subjects: list[str]
    inline: dict[str, object]
    managed: list[str]


def role_specs(cfg: BootstrapConfig, account_id: str, region: str) -> list[RoleSpec]:
    """The roles of one account, with their exact subjects and policies (pure, for the tests)."""
    repo = cfg.repository
    env = cfg.environment
    ecr_arn = f"arn:aws:ecr:{region}:{account_id}:repository/{cfg.ecr_repository_name}"
    # dev's image is built on main, outside any environment; later stacks receive it by promotion.
    push_subject = subject(repo, ref="refs/heads/main") if env == "dev" else subject(repo, environment=env)
    specs = [
        RoleSpec(
            "preview",
            [subject(repo, environment=f"{env}-preview")],
            {"no-data-reads": preview_deny_policy()},
            MANAGED_POLICIES["preview"],
        ),
        RoleSpec(
            "deployer",
            [subject(repo, environment=env)],
            {"iam": deployer_iam_policy(account_id)},
            MANAGED_POLICIES["deployer"],
        ),
        RoleSpec("image-push", [push_subject], {"ecr": ecr_policy(ecr_arn, push=True)}, []),
    ]
    if cfg.promotion_target is not None:
        specs.append(
            RoleSpec(
                "image-pull",
                [subject(repo, environment=cfg.promotion_target)],
                {"ecr": ecr_policy(ecr_arn, push=False)},
                [],
            )
        )
    return specs


def _trust_json(subjects: list[str]) -> Callable[[str], str]:
    return lambda provider_arn: json.dumps(github_trust_policy(provider_arn, subjects))


class GithubCiAccess(pulumi.ComponentResource):
    """GitHub's OIDC provider, one IAM role per :class:`RoleSpec` (``ci-<role>``), the permissions
    boundary every role of the main stack must carry, and the account's EC2 Spot service-linked role."""

    def __init__(
        self,
        name: str,
        specs: list[RoleSpec],
        account_id: str,
        *,
        create_spot_role: bool = True,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(f"{TOKEN_PREFIX}:GithubCiAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.boundary = aws.iam.Policy(
            f"{name}-workload-boundary",
            name=WORKLOAD_BOUNDARY_NAME,
            description="Permissions boundary of every role the main stack creates (ci-deployer must set it)",
            policy=json.dumps(workload_boundary_policy(account_id)),
            opts=child,
        )
        if create_spot_role:
            # Account-wide and possibly used by others: destroying this stack leaves it in place.
            aws.iam.ServiceLinkedRole(
                f"{name}-spot",
                aws_service_name=SPOT_SERVICE,
                description="EC2 Spot (Karpenter's spot launches)",
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
        # No thumbprint: AWS trusts GitHub's OIDC endpoint through its own CA library.
        self.provider = aws.iam.OpenIdConnectProvider(
            f"{name}-github", url=GITHUB_OIDC_URL, client_id_lists=[STS_AUDIENCE], opts=child
        )
        self.role_arns: dict[str, pulumi.Output[str]] = {}
        for spec in specs:
            role = aws.iam.Role(
                f"{name}-{spec.name}",
                name=f"{CI_ROLE_PREFIX}{spec.name}",
                description=f"GitHub Actions ({', '.join(spec.subjects)})",
                assume_role_policy=self.provider.arn.apply(_trust_json(spec.subjects)),
                max_session_duration=3600,
                opts=child,
            )
            for policy_name, document in spec.inline.items():
                aws.iam.RolePolicy(
                    f"{name}-{spec.name}-{policy_name}",
                    role=role.name,
                    policy=json.dumps(document),
                    opts=pulumi.ResourceOptions(parent=role),
                )
            for i, arn in enumerate(spec.managed):
                aws.iam.RolePolicyAttachment(
                    f"{name}-{spec.name}-managed-{i}",
                    role=role.name,
                    policy_arn=arn,
                    opts=pulumi.ResourceOptions(parent=role),
                )
            self.role_arns[spec.name] = role.arn
        self.register_outputs(
            {"providerArn": self.provider.arn, "roleArns": self.role_arns, "boundaryArn": self.boundary.arn}
        )


def main() -> None:
    cfg = load_config()
    aws_config = pulumi.Config("aws")
    region = aws_config.require("region")
    accounts = aws_config.require_object("allowedAccountIds")
    provider = aws.Provider("aws", region=region, allowed_account_ids=accounts)
    # The account is the one the credentials are in; allowedAccountIds has already refused any other.
    account_id = aws.get_caller_identity(opts=pulumi.InvokeOptions(provider=provider)).account_id
    access = GithubCiAccess(
        "ci",
        role_specs(cfg, account_id, region),
        account_id,
        create_spot_role=cfg.spot_service_linked_role == "create",
        opts=pulumi.ResourceOptions(providers=[provider]),
    )
    if cfg.github_repository_id is not None:
        variables: dict[str, pulumi.Input[str]] = {
            "AWS_PREVIEW_ROLE_ARN": access.role_arns["preview"],
            "AWS_DEPLOY_ROLE_ARN": access.role_arns["deployer"],
        }
        if cfg.environment != "dev":  # dev's image-push role is a repository variable (the build has no environment)
            variables["AWS_IMAGE_PUSH_ROLE_ARN"] = access.role_arns["image-push"]
        if cfg.digest_app_id:
            variables["DIGEST_APP_ID"] = cfg.digest_app_id
        GithubDelivery(
            "github",
            cfg.repository,
            cfg.github_repository_id,
            cfg.environment,
            variables,
            cfg.reviewer_team_ids,
            opts=pulumi.ResourceOptions(providers=[github.Provider("github", owner=cfg.repository.split("/")[0])]),
        )
    pulumi.export("oidcProviderArn", access.provider.arn)
    pulumi.export("workloadBoundaryArn", access.boundary.arn)
    for role, arn in access.role_arns.items():
        pulumi.export(to_camel(role.replace("-", "_")) + "RoleArn", arn)  # image-push -> imagePushRoleArn
