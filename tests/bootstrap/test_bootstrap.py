"""The bootstrap program under Pulumi's mocks: per account, GitHub's OIDC provider and CI roles that
only this repository's exact subjects can assume, with policies that pass the main program's checks."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from bootstrap import program
from bootstrap.policies import github_trust_policy, subject
from infra.aws.policies import least_privilege_violations
from infra.config import ConfigError, parse_config
from infra.mockrun import StackRun, load_stack_config, run_program, stack_account, to_pulumi_config
from policy.rules import check_resource
from tests.infra.harness import cached_run

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "bootstrap"
STACKS = ("dev", "staging", "prod")
OIDC = "token.actions.githubusercontent.com"


def run_bootstrap(stack: str, overrides: dict[str, Any] | None = None) -> StackRun:
    raw = load_stack_config(stack, BOOTSTRAP)
    raw.update({f"{program.NAMESPACE}:{k}": v for k, v in (overrides or {}).items()})
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
        assert check_resource(resource.type, resource.inputs) == {}, resource.name


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
    denies = [st for st in iam["Statement"] if st["Effect"] == "Deny"]
    assert denies and denies[0]["Action"] == ["iam:*"]
    assert f"arn:aws:iam::{account}:role/ci-*" in denies[0]["Resource"]


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
    associations = {
        r.inputs["principalArn"]: r.inputs["policyArn"]
        for r in cached_run(stack).of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }
    assert associations[preview] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminViewPolicy"


def test_a_role_cannot_be_both_viewer_and_admin() -> None:
    raw = load_stack_config("dev")
    cluster = dict(raw["purchase-classifier:cluster"])
    cluster["viewerRoleArns"] = [cluster["adminRoleArns"][0]]
    raw["purchase-classifier:cluster"] = cluster
    with pytest.raises(ConfigError, match="in both adminRoleArns and viewerRoleArns"):
        parse_config(raw, stack="dev", aws_region="eu-west-1")
