"""The bootstrap program under Pulumi's mocks: per account, GitHub's OIDC provider and CI roles that
only this repository's exact subjects can assume, with policies that pass the main program's checks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from bootstrap import program
from bootstrap.policies import (
    deployer_iam_policy,
    github_trust_policy,
    subject,
    workload_boundary_policy,
)
from infra.aws.policies import least_privilege_violations
from infra.config import ConfigError, parse_config
from infra.mockrun import StackRun, load_stack_config, run_program, stack_account, to_pulumi_config
from infra.naming import PREVIEW_GROUP, WORKLOAD_BOUNDARY_NAME, WORKLOAD_ROLE_PATH, workload_boundary_arn
from policy.rules import check_resource, iam_role_bounded
from tests.bootstrap.iam_eval import ADMINISTRATOR_ACCESS, POWER_USER_ACCESS, allows, effective
from tests.infra.harness import cached_run

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "bootstrap"
STACKS = ("dev", "staging", "prod")
OIDC = "token.actions.githubusercontent.com"


def run_bootstrap(stack: str, overrides: dict[str, Any] | None = None) -> StackRun:
    raw = load_stack_config(stack, BOOTSTRAP)
    for key, value in (overrides or {}).items():  # None removes the key
        raw.pop(f"{program.NAMESPACE}:{key}", None)
        if value is not None:
            raw[f"{program.NAMESPACE}:{key}"] = value
    config, secret_keys = to_pulumi_config(raw)
    return run_program(
        program.main,
        stack=stack,
        config=config,
        secret_keys=secret_keys,
        region=str(raw["aws:region"]),
        account=stack_account(raw),
        project="purchase-classifier-bootstrap",
    )


@cache
def cached(stack: str) -> StackRun:
    return run_bootstrap(stack)


def _repository(stack: str) -> str:
    return str(load_stack_config(stack, BOOTSTRAP)[f"{program.NAMESPACE}:repository"])


def _trusts(run: StackRun) -> dict[str, dict[str, Any]]:
    return {r.inputs["name"]: json.loads(r.inputs["assumeRolePolicy"]) for r in run.of_type("aws:iam/role:Role")}


def _subjects(trust: dict[str, Any]) -> list[str]:
    return list(trust["Statement"][0]["Condition"]["StringEquals"][f"{OIDC}:sub"])


def _inline(run: StackRun) -> dict[str, dict[str, Any]]:
    return {r.name: json.loads(r.inputs["policy"]) for r in run.of_type("aws:iam/rolePolicy:RolePolicy")}


def _expected_subjects(stack: str) -> dict[str, list[str]]:
    repo = _repository(stack)
    expected = {
        "ci-preview": [f"repo:{repo}:environment:{stack}-preview"],
        "ci-deployer": [f"repo:{repo}:environment:{stack}"],
        "ci-image-push": [f"repo:{repo}:ref:refs/heads/main" if stack == "dev" else f"repo:{repo}:environment:{stack}"],
    }
    following = {"dev": "staging", "staging": "prod"}
    if stack in following:
        expected["ci-image-pull"] = [f"repo:{repo}:environment:{following[stack]}"]
    return expected


@pytest.mark.parametrize("stack", STACKS)
def test_roles_trust_only_this_repositorys_exact_subjects(stack: str) -> None:
    run = cached(stack)
    (provider,) = run.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider.inputs["url"] == f"https://{OIDC}"
    assert provider.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    provider_arn = run.outputs["oidcProviderArn"]

    trusts = _trusts(run)
    assert set(trusts) == set(_expected_subjects(stack))
    for name, trust in trusts.items():
        (statement,) = trust["Statement"]
        assert statement["Principal"] == {"Federated": provider_arn}
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        # Exact matches only: no StringLike, no wildcard in any subject.
        assert set(statement["Condition"]) == {"StringEquals"}, name
        assert statement["Condition"]["StringEquals"] == {
            f"{OIDC}:aud": "sts.amazonaws.com",
            f"{OIDC}:sub": _expected_subjects(stack)[name],
        }


def test_an_environment_subject_never_opens_another_environments_roles() -> None:
    # staging's deploy subject must not appear in prod's roles, nor the preview subject in any deployer.
    for stack in STACKS:
        assert all("-preview" not in s for s in _subjects(_trusts(cached(stack))["ci-deployer"]))
    prod_subjects = {s for trust in _trusts(cached("prod")).values() for s in _subjects(trust)}
    assert not any(s.endswith((":environment:staging", ":environment:dev")) for s in prod_subjects)


@pytest.mark.parametrize("stack", STACKS)
def test_policies_pass_the_main_programs_checks(stack: str) -> None:
    run = cached(stack)
    documents = _inline(run)
    assert documents
    for name, document in documents.items():
        assert least_privilege_violations(document) == [], name
    for resource in run.resources:
        found = check_resource(resource.type, resource.inputs)
        if resource.name == "ci-workload-boundary":
            # A boundary is a ceiling that grants nothing by itself: it is written as the widest set a
            # bounded role may reach (checked by the escalation tests below), not as a grant.
            assert set(found) == {"iam-least-privilege"}, found
            continue
        if resource.type == "aws:iam/role:Role":
            # The CI roles are made by an administrator running this program, outside the workload
            # path and boundary that iam-role-bounded requires of the roles ci-deployer creates.
            assert resource.name.startswith("ci-") and set(found) == {"iam-role-bounded"}, (resource.name, found)
            continue
        assert found == {}, resource.name


@pytest.mark.parametrize("stack", STACKS)
def test_image_roles_reach_only_this_accounts_repository(stack: str) -> None:
    run = cached(stack)
    account = stack_account(load_stack_config(stack, BOOTSTRAP))
    repository = f"arn:aws:ecr:eu-west-1:{account}:repository/purchase-classifier"
    for name, document in _inline(run).items():
        if not name.endswith("-ecr"):
            continue
        scoped = [st for st in document["Statement"] if st["Resource"] != "*"]
        assert [st["Resource"] for st in scoped] == [[repository]], name
        pushes = {"ecr:PutImage", "ecr:InitiateLayerUpload"} & set(scoped[0]["Action"])
        assert bool(pushes) == name.startswith("ci-image-push"), name
        unscoped = [st for st in document["Statement"] if st["Resource"] == "*"]
        assert [st["Action"] for st in unscoped] == [["ecr:GetAuthorizationToken"]]


@pytest.mark.parametrize("stack", STACKS)
def test_the_deployer_cannot_change_the_ci_roles(stack: str) -> None:
    account = stack_account(load_stack_config(stack, BOOTSTRAP))
    iam = _inline(cached(stack))["ci-deployer-iam"]
    (deny,) = [st for st in iam["Statement"] if st["Effect"] == "Deny" and st["Action"] == ["iam:*"]]
    assert f"arn:aws:iam::{account}:role/ci-*" in deny["Resource"]
    assert f"arn:aws:iam::{account}:policy/ci-*" in deny["Resource"]  # the boundary is ci-workload-boundary


# --- no escalation: what ci-deployer can do with IAM, evaluated (tests/bootstrap/iam_eval.py) ----------

ACCOUNT = "111122223333"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/{WORKLOAD_BOUNDARY_NAME}"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
STACK_ROLE = f"arn:aws:iam::{ACCOUNT}:role{WORKLOAD_ROLE_PATH}serving"
ROOT_ROLE = f"arn:aws:iam::{ACCOUNT}:role/serving"
CI_DEPLOYER = f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"


def _with(boundary: str | None = None, policy: str | None = None) -> dict[str, str]:
    context = {"iam:PermissionsBoundary": boundary, "iam:PolicyARN": policy}
    return {k: v for k, v in context.items() if v is not None}


ESCALATIONS = {
    # name: (action, resource, request context) that must never be allowed
    "create an unbounded role": ("iam:CreateRole", STACK_ROLE, _with()),
    "create a role outside the path": ("iam:CreateRole", ROOT_ROLE, _with(BOUNDARY)),
    "attach AdministratorAccess to an unbounded role": ("iam:AttachRolePolicy", ROOT_ROLE, _with(policy=ADMIN)),
    "attach a policy to ci-deployer": ("iam:AttachRolePolicy", CI_DEPLOYER, _with(BOUNDARY, ADMIN)),
    "write ci-deployer's inline policy": ("iam:PutRolePolicy", CI_DEPLOYER, _with(BOUNDARY)),
    "trust itself from ci-deployer": ("iam:UpdateAssumeRolePolicy", CI_DEPLOYER, _with()),
    "swap the boundary for AdministratorAccess": ("iam:PutRolePermissionsBoundary", STACK_ROLE, _with(ADMIN)),
    "remove a boundary": ("iam:DeleteRolePermissionsBoundary", STACK_ROLE, _with()),
    "widen the boundary": ("iam:CreatePolicyVersion", BOUNDARY, _with()),
    "pass ci-deployer to a service": ("iam:PassRole", CI_DEPLOYER, _with()),
    "create a user": ("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/x", _with()),
    "create an access key": ("iam:CreateAccessKey", f"arn:aws:iam::{ACCOUNT}:user/x", _with()),
}


def escalations(deployer: list[Mapping[str, Any]]) -> list[str]:
    """The escalations ``deployer`` (its policies) allows."""
    return [name for name, (action, resource, ctx) in ESCALATIONS.items() if allows(deployer, action, resource, ctx)]


# ci-deployer's IAM policy as it was: any role, any policy, only the ci-* roles denied.
UNSAFE_DEPLOYER_IAM = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["iam:AttachRolePolicy", "iam:CreatePolicy", "iam:CreateRole", "iam:PassRole",
                       "iam:PutRolePolicy", "iam:UpdateAssumeRolePolicy"],
            "Resource": [f"arn:aws:iam::{ACCOUNT}:role/*", f"arn:aws:iam::{ACCOUNT}:policy/*"],
        },
        {"Effect": "Deny", "Action": ["iam:*"], "Resource": [f"arn:aws:iam::{ACCOUNT}:role/ci-*"]},
    ],
}  # fmt: skip


def test_the_deployer_has_no_escalation_path() -> None:
    assert escalations([deployer_iam_policy(ACCOUNT), POWER_USER_ACCESS]) == []


def test_the_unsafe_deployer_policy_is_caught() -> None:
    found = escalations([UNSAFE_DEPLOYER_IAM, POWER_USER_ACCESS])
    assert {"create an unbounded role", "create a role outside the path"} <= set(found)
    assert "attach AdministratorAccess to an unbounded role" in found


def test_the_deployer_still_builds_the_stacks_roles() -> None:
    """What the main program needs stays allowed, for bounded roles under the path."""
    deployer = [deployer_iam_policy(ACCOUNT), POWER_USER_ACCESS]
    for action in ("iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy"):
        assert allows(deployer, action, STACK_ROLE, _with(BOUNDARY)), action
    for action in ("iam:GetRole", "iam:DeleteRole", "iam:TagRole", "iam:PassRole", "iam:UpdateAssumeRolePolicy"):
        assert allows(deployer, action, STACK_ROLE), action
    assert allows(deployer, "iam:CreateServiceLinkedRole", f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/x")
    assert allows(deployer, "eks:CreateCluster", f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/x")


def test_a_bounded_role_with_administrator_access_stays_out_of_iam() -> None:
    """Even AdministratorAccess attached to a stack role is capped by the boundary."""
    boundary = workload_boundary_policy(ACCOUNT)

    def can(action: str, resource: str = "*") -> bool:
        return effective([ADMINISTRATOR_ACCESS], boundary, action, resource)

    assert can("s3:GetObject") and can("ec2:RunInstances") and can("iam:CreateInstanceProfile")
    assert can("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role{WORKLOAD_ROLE_PATH}karpenter-node")
    for action in (
        "iam:CreateRole",
        "iam:AttachRolePolicy",
        "iam:PutRolePolicy",
        "iam:CreateUser",
        "iam:CreateAccessKey",
        "iam:CreatePolicyVersion",
        "organizations:LeaveOrganization",
    ):
        assert not can(action), action  # fmt: skip
    assert not can("iam:PassRole", CI_DEPLOYER)
    assert not can("sts:AssumeRole", CI_DEPLOYER)
    assert effective([ADMINISTRATOR_ACCESS], None, "iam:CreateRole", STACK_ROLE)  # without the boundary: admin


@pytest.mark.parametrize("stack", STACKS)
def test_each_account_gets_the_boundary_the_deployer_requires(stack: str) -> None:
    run = cached(stack)
    account = stack_account(load_stack_config(stack, BOOTSTRAP))
    (boundary,) = [r for r in run.of_type("aws:iam/policy:Policy") if r.inputs["name"] == WORKLOAD_BOUNDARY_NAME]
    assert json.loads(boundary.inputs["policy"]) == workload_boundary_policy(account)
    condition = _inline(run)["ci-deployer-iam"]["Statement"][0]["Condition"]["StringEquals"]
    assert condition == {"iam:PermissionsBoundary": workload_boundary_arn(account)}
    assert "workloadBoundaryArn" in run.outputs


def test_the_policy_pack_rule_accepts_exactly_the_roles_the_deployer_may_create() -> None:
    deployer = [deployer_iam_policy(ACCOUNT), POWER_USER_ACCESS]
    candidates = [
        {"path": WORKLOAD_ROLE_PATH, "permissionsBoundary": BOUNDARY},
        {"path": WORKLOAD_ROLE_PATH},
        {"path": "/", "permissionsBoundary": BOUNDARY},
        {"permissionsBoundary": BOUNDARY},
        {"path": WORKLOAD_ROLE_PATH, "permissionsBoundary": ADMIN},
    ]
    for props in candidates:
        arn = f"arn:aws:iam::{ACCOUNT}:role{props.get('path', '/')}app"
        creatable = allows(deployer, "iam:CreateRole", arn, _with(props.get("permissionsBoundary")))
        assert (iam_role_bounded("aws:iam/role:Role", props) == []) is creatable, props
    assert any("permissionsBoundary" in m for m in iam_role_bounded("aws:iam/role:Role", {"path": WORKLOAD_ROLE_PATH}))
    assert any("path is '/'" in m for m in iam_role_bounded("aws:iam/role:Role", {"path": "/"}))


# --- the EC2 Spot service-linked role ------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_the_spot_service_linked_role_is_created_by_default(stack: str) -> None:
    (spot,) = cached(stack).of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert spot.inputs["awsServiceName"] == "spot.amazonaws.com"


def test_an_account_that_has_the_spot_role_says_so_and_gets_no_second_one() -> None:
    run = run_bootstrap("staging", {"spotServiceLinkedRole": "exists"})
    assert run.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole") == []
    with pytest.raises(Exception, match=r"purchase-classifier-bootstrap:spotServiceLinkedRole: Input should be"):
        run_bootstrap("staging", {"spotServiceLinkedRole": "maybe"})


@pytest.mark.parametrize("stack", STACKS)
def test_preview_reads_configuration_not_data(stack: str) -> None:
    run = cached(stack)
    attached = {r.name: r.inputs["policyArn"] for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")}
    assert attached["ci-preview-managed-0"] == "arn:aws:iam::aws:policy/ReadOnlyAccess"
    denied = _inline(run)["ci-preview-no-data-reads"]["Statement"][0]
    assert denied["Effect"] == "Deny" and {"s3:GetObject", "secretsmanager:GetSecretValue"} <= set(denied["Action"])


@pytest.mark.parametrize("stack", STACKS)
def test_each_bootstrap_stack_is_pinned_to_its_main_stacks_account(stack: str) -> None:
    run = cached(stack)
    main_account = stack_account(load_stack_config(stack))
    (provider,) = run.of_type("pulumi:providers:aws")
    assert json.loads(provider.inputs["allowedAccountIds"]) == [main_account]
    assert all(arn.startswith(f"arn:aws:iam::{main_account}:role/ci-") for arn in _role_arns(run))


def _role_arns(run: StackRun) -> list[str]:
    arns = {k: v for k, v in run.outputs.items() if k.endswith("RoleArn")}
    assert set(arns) >= {"previewRoleArn", "deployerRoleArn", "imagePushRoleArn"}
    return list(arns.values())


@pytest.mark.parametrize("stack", STACKS)
def test_the_deployer_is_the_role_the_main_stack_makes_cluster_admin(stack: str) -> None:
    main = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert run_outputs_role(stack, "deployer") in main["purchase-classifier:cluster"]["adminRoleArns"]


def run_outputs_role(stack: str, role: str) -> str:
    return str(cached(stack).outputs[f"{role}RoleArn"])


def test_bad_repository_is_refused_with_the_key() -> None:
    with pytest.raises(Exception, match=r"purchase-classifier-bootstrap:repository: String should match pattern"):
        run_bootstrap("dev", {"repository": "not a repository"})


def test_trust_refuses_wildcard_or_missing_subjects() -> None:
    with pytest.raises(ValueError, match="exact subject claims"):
        github_trust_policy("arn:aws:iam::111122223333:oidc-provider/x", ["repo:o/r:*"])
    with pytest.raises(ValueError, match="exact subject claims"):
        github_trust_policy("arn:aws:iam::111122223333:oidc-provider/x", [])
    with pytest.raises(ValueError, match="exactly one"):
        subject("o/r")


@pytest.mark.parametrize("stack", STACKS)
def test_the_preview_role_reads_the_main_stacks_cluster(stack: str) -> None:
    preview = run_outputs_role(stack, "preview")
    main = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert preview in main["purchase-classifier:cluster"]["viewerRoleArns"]
    assert preview not in main["purchase-classifier:cluster"]["adminRoleArns"]
    run = cached_run(stack)
    associations = {
        r.inputs["principalArn"] for r in run.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }
    assert preview not in associations  # no EKS view policy: AmazonEKSAdminViewPolicy reads Secrets
    entry = next(e for e in run.of_type("aws:eks/accessEntry:AccessEntry") if e.inputs["principalArn"] == preview)
    assert entry.inputs["kubernetesGroups"] == [PREVIEW_GROUP]


def test_a_role_cannot_be_both_viewer_and_admin() -> None:
    raw = load_stack_config("dev")
    cluster = dict(raw["purchase-classifier:cluster"])
    cluster["viewerRoleArns"] = [cluster["adminRoleArns"][0]]
    raw["purchase-classifier:cluster"] = cluster
    with pytest.raises(ConfigError, match="in both adminRoleArns and viewerRoleArns"):
        parse_config(raw, stack="dev", aws_region="eu-west-1")


# --- GitHub: runner groups and environments ---------------------------------------------------------------


def _github(run: StackRun, type_: str) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in run.of_type(f"github:index/{type_}")}


@pytest.mark.parametrize("stack", STACKS)
def test_github_runner_groups_split_by_trust(stack: str) -> None:
    repo = _repository(stack)
    groups = {g["name"]: g for g in _github(cached(stack), "actionsRunnerGroup:ActionsRunnerGroup").values()}
    assert set(groups) == {f"pc-{stack}-preview", f"pc-{stack}-deploy"}
    for group in groups.values():
        assert group["visibility"] == "selected" and group["selectedRepositoryIds"] == [123456789]
        assert group["allowsPublicRepositories"] is False
    workflow = "deploy-dev.yml" if stack == "dev" else "promote.yml"
    deploy = groups[f"pc-{stack}-deploy"]
    assert deploy["restrictedToWorkflows"] is True
    assert deploy["selectedWorkflows"] == [f"{repo}/.github/workflows/{workflow}@refs/heads/main"]


@pytest.mark.parametrize("stack", STACKS)
def test_github_environments_admit_main_only_where_they_deploy(stack: str) -> None:
    run = cached(stack)
    environments = {e["environment"]: e for e in _github(run, "repositoryEnvironment:RepositoryEnvironment").values()}
    assert set(environments) == {f"{stack}-preview", stack}
    preview, deploy = environments[f"{stack}-preview"], environments[stack]
    assert "deploymentBranchPolicy" not in preview and "reviewers" not in preview  # pull requests run here
    assert deploy["deploymentBranchPolicy"] == {"protectedBranches": False, "customBranchPolicies": True}
    assert deploy["canAdminsBypass"] is False
    if stack == "dev":
        assert "reviewers" not in deploy
    else:
        assert deploy["reviewers"] == [{"teams": [2345678]}] and deploy["preventSelfReview"] is True
    policies = _github(run, "repositoryEnvironmentDeploymentPolicy:RepositoryEnvironmentDeploymentPolicy").values()
    assert [(p["environment"], p["branchPattern"]) for p in policies] == [(stack, "main")]


@pytest.mark.parametrize("stack", STACKS)
def test_github_environment_variables_are_this_stacks_roles_and_teams(stack: str) -> None:
    run = cached(stack)
    variables = {
        (v["environment"], v["variableName"]): v["value"]
        for v in _github(run, "actionsEnvironmentVariable:ActionsEnvironmentVariable").values()
    }
    expected = {
        (f"{stack}-preview", "AWS_PREVIEW_ROLE_ARN"): run.outputs["previewRoleArn"],
        (f"{stack}-preview", "PULUMI_TEAM"): f"ci-preview-{stack}",
        (stack, "AWS_DEPLOY_ROLE_ARN"): run.outputs["deployerRoleArn"],
        (stack, "PULUMI_TEAM"): f"ci-deploy-{stack}",
    }
    if stack != "dev":
        expected[(stack, "AWS_IMAGE_PUSH_ROLE_ARN")] = run.outputs["imagePushRoleArn"]
    assert variables == expected
    # Nothing secret is written by a program: the App's key is set by hand.
    assert not any("PRIVATE_KEY" in name for _, name in variables)


def test_github_is_optional_and_reviewed_stacks_need_reviewers() -> None:
    assert not any(
        r.type.startswith("github:index/") for r in run_bootstrap("dev", {"githubRepositoryId": None}).resources
    )
    with pytest.raises(Exception, match=r"reviewerTeamIds: prod deploys need reviewers"):
        run_bootstrap("prod", {"reviewerTeamIds": []})
