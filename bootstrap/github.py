"""What GitHub and Pulumi Cloud must hold for one environment: runner groups, environments, and the
Pulumi Cloud OIDC issuer's token policies.

Declared once here as data, checked against the workflows by ``tests/test_workflows.py``. The GitHub
half is created by the bootstrap program (:class:`GithubDelivery`, with the ``github`` provider: the
runner groups, the environments with their branch policies and reviewers, and the variables whose
values this stack knows). The Pulumi Cloud half and the App's secret are printed for an administrator
to apply (``python -m bootstrap.github --repository owner/name --pulumi-org org --stack prod``;
docs/delivery.md#one-time-setup says where each setting goes).

Trust boundaries, why they are drawn here:

- **Runner groups.** ``pc-<stack>-preview`` runs pull-request previews and drift checks: code no one
  has reviewed. ``pc-<stack>-deploy`` runs ``deploy-dev.yml`` (dev) or ``promote.yml`` (staging,
  prod), and GitHub refuses any other workflow or ref on it (``restricted_to_workflows``). Both use
  ephemeral runners (one job per fresh VM), so no job inherits another's files or processes.
- **Pulumi Cloud tokens.** The issuer policy maps one exact ``sub`` claim to one team token:
  ``<stack>-preview`` to the read-only ``ci-preview-<stack>`` team, ``<stack>`` to
  ``ci-deploy-<stack>`` (write on that one stack). No rule names a ``pull_request`` subject or an
  organization token, so nothing else can be exchanged.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_github as github

STACKS = ("dev", "staging", "prod")
DEPLOY_WORKFLOW = {"dev": "deploy-dev.yml", "staging": "promote.yml", "prod": "promote.yml"}
"""The one workflow that changes each stack (dev on merge; staging and prod by promotion)."""
MAIN = "refs/heads/main"
PULUMI_AUDIENCE_PREFIX = "urn:pulumi:org:"
RUNNER_LABELS = ("self-hosted", "linux", "ephemeral")


def preview_group(stack: str) -> str:
    return f"pc-{stack}-preview"


def deploy_group(stack: str) -> str:
    return f"pc-{stack}-deploy"


def preview_team(stack: str) -> str:
    return f"ci-preview-{stack}"


def deploy_team(stack: str) -> str:
    return f"ci-deploy-{stack}"


def runner_groups(repository: str, stack: str) -> list[dict[str, Any]]:
    """The two runner groups of ``stack`` in the REST API's shape (``POST /orgs/{org}/actions/runner-groups``)."""
    common = {"visibility": "selected", "selected_repositories": [repository], "allows_public_repositories": False}
    return [
        # Any workflow of the repository may run here (a pull request can name any workflow file):
        # what keeps it harmless is that these runners are ephemeral and its credentials only read.
        {"name": preview_group(stack), **common, "restricted_to_workflows": False},
        {
            "name": deploy_group(stack),
            **common,
            "restricted_to_workflows": True,
            "selected_workflows": [f"{repository}/.github/workflows/{DEPLOY_WORKFLOW[stack]}@{MAIN}"],
        },
    ]


def environments(stack: str) -> list[dict[str, Any]]:
    """The GitHub environments of ``stack``: who may use them and what they hold."""
    return [
        {
            "name": f"{stack}-preview",
            # Pull-request previews run on PR branches; the environment only names read-only access.
            "deployment_branches": "any",
            "reviewers": False,
            "variables": ["AWS_PREVIEW_ROLE_ARN", "PULUMI_TEAM"],
            "secrets": [],
        },
        {
            "name": stack,
            "deployment_branches": ["main"],
            "reviewers": stack != "dev",
            "variables": ["AWS_DEPLOY_ROLE_ARN", "PULUMI_TEAM", "DIGEST_APP_ID"]
            + ([] if stack == "dev" else ["AWS_IMAGE_PUSH_ROLE_ARN", "AWS_SOURCE_PULL_ROLE_ARN"]),
            # The App's key exists only here: only approved deploy jobs on main can push to main.
            "secrets": ["DIGEST_APP_PRIVATE_KEY"],
        },
    ]


def pulumi_issuer_policies(repository: str, organization: str) -> list[dict[str, Any]]:
    """Pulumi Cloud's authorization policies for GitHub's OIDC issuer: exact subject -> one team token."""
    policies = []
    for stack in STACKS:
        for environment, team in ((f"{stack}-preview", preview_team(stack)), (stack, deploy_team(stack))):
            policies.append(
                {
                    "decision": "allow",
                    "tokenType": "team",
                    "teamName": team,
                    "rules": {
                        "aud": f"{PULUMI_AUDIENCE_PREFIX}{organization}",
                        "sub": f"repo:{repository}:environment:{environment}",
                    },
                }
            )
    return policies


def pulumi_teams(stack: str) -> dict[str, str]:
    """Each team's stack permission in Pulumi Cloud (``read`` or ``write`` on ``purchase-classifier/<stack>``)."""
    return {preview_team(stack): "read", deploy_team(stack): "write"}


def settings(repository: str, organization: str, stack: str) -> dict[str, Any]:
    return {
        "runnerGroups": runner_groups(repository, stack),
        "environments": environments(stack),
        "pulumiTeams": pulumi_teams(stack),
        "pulumiIssuerPolicies": [
            p for p in pulumi_issuer_policies(repository, organization) if p["teamName"] in pulumi_teams(stack)
        ],
    }


class GithubDelivery(pulumi.ComponentResource):
    """One stack's runner groups and GitHub environments, with the variables this stack knows.

    ``variables`` maps a variable name to its value (``PULUMI_TEAM`` is set per environment here);
    names an environment lists but ``variables`` lacks (the previous account's pull role, the App's
    id when not configured) are set by hand, and the App's private key is a secret no program holds.
    """

    def __init__(
        self,
        name: str,
        repository: str,
        repository_id: int,
        stack: str,
        variables: Mapping[str, pulumi.Input[str]],
        reviewer_team_ids: Sequence[int],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier-bootstrap:ci:GithubDelivery", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        for group in runner_groups(repository, stack):
            github.ActionsRunnerGroup(
                f"{name}-{group['name']}",
                name=group["name"],
                visibility=group["visibility"],
                selected_repository_ids=[repository_id],
                allows_public_repositories=group["allows_public_repositories"],
                restricted_to_workflows=group["restricted_to_workflows"],
                selected_workflows=group.get("selected_workflows"),
                opts=child,
            )
        repo_name = repository.split("/", 1)[1]
        for spec in environments(stack):
            reviewed = bool(spec["reviewers"])
            main_only = spec["deployment_branches"] != "any"
            environment = github.RepositoryEnvironment(
                f"{name}-{spec['name']}",
                repository=repo_name,
                environment=spec["name"],
                can_admins_bypass=False,
                prevent_self_review=reviewed,
                reviewers=[github.RepositoryEnvironmentReviewerArgs(teams=list(reviewer_team_ids))]
                if reviewed
                else None,
                deployment_branch_policy=github.RepositoryEnvironmentDeploymentBranchPolicyArgs(
                    protected_branches=False, custom_branch_policies=True
                )
                if main_only
                else None,
                opts=child,
            )
            env_child = pulumi.ResourceOptions(parent=environment)
            for branch in spec["deployment_branches"] if main_only else []:
                github.RepositoryEnvironmentDeploymentPolicy(
                    f"{name}-{spec['name']}-{branch}",
                    repository=repo_name,
                    environment=environment.environment,
                    branch_pattern=branch,
                    opts=env_child,
                )
            team = preview_team(stack) if spec["name"].endswith("-preview") else deploy_team(stack)
            values = {**variables, "PULUMI_TEAM": team}
            for variable in spec["variables"]:
                if variable in values:
                    github.ActionsEnvironmentVariable(
                        f"{name}-{spec['name']}-{variable}",
                        repository=repo_name,
                        environment=environment.environment,
                        variable_name=variable,
                        value=values[variable],
                        opts=env_child,
                    )
        self.register_outputs({})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bootstrap.github", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="GitHub owner/name")
    parser.add_argument("--pulumi-org", required=True, help="Pulumi Cloud organization")
    parser.add_argument("--stack", required=True, choices=STACKS)
    args = parser.parse_args(argv)
    print(json.dumps(settings(args.repository, args.pulumi_org, args.stack), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
