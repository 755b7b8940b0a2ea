"""What GitHub and Pulumi Cloud must hold for one environment, as data: runner groups, environments,
and the Pulumi Cloud OIDC issuer's token policies.

These live outside AWS, so the bootstrap program cannot create them with the AWS provider; they are
declared here once, checked against the workflows by ``tests/test_workflows.py``, and printed for an
administrator to apply (``python -m bootstrap.github --repository owner/name --stack prod``;
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
from collections.abc import Sequence
from typing import Any

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
            "variables": {"AWS_PREVIEW_ROLE_ARN": f"{stack}'s ci-preview", "PULUMI_TEAM": preview_team(stack)},
            "secrets": [],
        },
        {
            "name": stack,
            "deployment_branches": ["main"],
            "reviewers": stack != "dev",
            "variables": {
                "AWS_DEPLOY_ROLE_ARN": f"{stack}'s ci-deployer",
                "PULUMI_TEAM": deploy_team(stack),
                "DIGEST_APP_ID": "the digest-recorder App's id",
            },
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
