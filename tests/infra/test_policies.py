"""IAM least privilege: the per-workload table, the builders, and every document the program emits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import mockrun
from infra.aws.policies import (
    WORKLOAD_ACCESS,
    BucketAccess,
    bucket_access_policy,
    karpenter_controller_policy,
    least_privilege_violations,
    pod_identity_trust_policy,
    tls_only_bucket_policy,
    write_actions,
)
from infra.mockrun import PlatformMocks, load_stack_config, stack_account
from infra.naming import IDENTITY_WORKLOADS, SA_DASK_SCHEDULER, SA_SERVING
from tests.infra.harness import AWS_STACKS, DIGEST, cached_run, run_stack

BUCKET = "arn:aws:s3:::pc-bucket"
KEY = "arn:aws:kms:eu-west-1:111122223333:key/k"


def _resources(policy: dict[str, Any], action: str) -> set[str]:
    found: set[str] = set()
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        if st["Effect"] == "Allow" and action in actions:
            found |= set(st["Resource"])
    return found


def test_every_identity_workload_has_access_and_scheduler_none() -> None:
    assert set(WORKLOAD_ACCESS) == set(IDENTITY_WORKLOADS)
    assert SA_DASK_SCHEDULER not in WORKLOAD_ACCESS


@pytest.mark.parametrize(
    ("workload", "reads", "writes"),
    [
        ("serving", {"models/"}, set()),
        ("predict", {"models/"}, {"predictions/"}),
        ("train", {"training/", "models/"}, {"models/"}),
        ("refresh", {"training/"}, {"training/"}),
        ("dask-worker", {"training/", "models/"}, {"predictions/"}),
    ],
)
def test_workload_prefixes(workload: str, reads: set[str], writes: set[str]) -> None:
    policy = bucket_access_policy(BUCKET, KEY, WORKLOAD_ACCESS[workload])
    assert _resources(policy, "s3:GetObject") == {f"{BUCKET}/{p}*" for p in reads}
    assert _resources(policy, "s3:PutObject") == {f"{BUCKET}/{p}*" for p in writes}
    assert least_privilege_violations(policy) == []


def test_serving_cannot_write_anywhere() -> None:
    policy = bucket_access_policy(BUCKET, KEY, WORKLOAD_ACCESS[SA_SERVING])
    assert write_actions(policy) == set()
    assert "kms:GenerateDataKey" not in json.dumps(policy)


def test_listing_is_scoped_to_own_prefixes() -> None:
    policy = bucket_access_policy(BUCKET, KEY, BucketAccess(read=("models/",)))
    listing = next(s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"])
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}


def test_checker_catches_broad_policies() -> None:
    broad = {
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": BUCKET},
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"},
            {"Effect": "Allow", "NotAction": "iam:*", "Resource": BUCKET},
        ]
    }
    problems = least_privilege_violations(broad)
    assert any("s3:*" in p for p in problems)
    assert any("wildcard resource '*'" in p for p in problems)
    assert any("NotAction" in p for p in problems)
    assert least_privilege_violations(tls_only_bucket_policy(BUCKET)) == []  # a Deny grants nothing


def test_wildcard_resource_only_for_actions_aws_cannot_scope() -> None:
    describe = {"Effect": "Allow", "Action": ["ec2:DescribeSubnets", "pricing:GetProducts"], "Resource": "*"}
    assert least_privilege_violations({"Statement": [describe]}) == []
    write = {"Effect": "Allow", "Action": ["ec2:RunInstances"], "Resource": "*"}
    assert least_privilege_violations({"Statement": [write]}) == [
        "statement 0: ec2:RunInstances on wildcard resource '*'"
    ]
    service_wide = {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::*"}
    assert least_privilege_violations({"Statement": [service_wide]}) != []
    streams = {"Effect": "Allow", "Action": ["logs:PutLogEvents"], "Resource": "arn:aws:logs:r:1:log-group:g:*"}
    assert least_privilege_violations({"Statement": [streams]}) == []


def test_resource_policies_may_grant_named_principals_broadly_but_never_everyone() -> None:
    key_admin = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "kms:*", "Resource": "*"}
    assert least_privilege_violations({"Statement": [key_admin]}) == []
    public = {"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": "arn:aws:sqs:r:1:q"}
    assert least_privilege_violations({"Statement": [public]}) == ["statement 0: Allow to every principal ('*')"]


def test_pod_identity_trust_pins_the_source_account() -> None:
    (st,) = pod_identity_trust_policy("444455556666")["Statement"]
    assert st["Effect"] == "Allow"
    assert st["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert st["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": "444455556666"}}


@pytest.mark.parametrize("account", ["", "12345", "11112222333x", "arn:aws:iam::111122223333:root"])
def test_pod_identity_trust_refuses_a_malformed_account(account: str) -> None:
    with pytest.raises(ValueError, match="12 digits"):
        pod_identity_trust_policy(account)


def test_no_access_means_no_policy() -> None:
    with pytest.raises(ValueError):
        bucket_access_policy(BUCKET, KEY, BucketAccess())


def _emitted_documents(stack: str) -> list[tuple[str, str, dict[str, Any]]]:
    docs = []
    for r in cached_run(stack).resources:
        for key in ("policy", "assumeRolePolicy"):
            value = r.inputs.get(key)
            if isinstance(value, str) and value.lstrip().startswith("{") and "Statement" in value:
                docs.append((r.type, r.name, json.loads(value)))
    return docs


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_emitted_policy_is_least_privilege(stack: str) -> None:
    docs = _emitted_documents(stack)
    types = {t for t, _, _ in docs}
    assert {"aws:iam/rolePolicy:RolePolicy", "aws:iam/role:Role", "aws:s3/bucketPolicy:BucketPolicy"} <= types
    for typ, name, doc in docs:
        assert least_privilege_violations(doc) == [], f"{typ} {name}: {doc}"
        for st in doc["Statement"]:
            if st["Effect"] == "Allow" and "Principal" not in st:
                actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
                assert "s3:*" not in actions and "*" not in actions


def _pod_identity_trusts(resources: list[mockrun.CapturedResource]) -> dict[str, dict[str, Any]]:
    """Every role trust document naming the Pod Identity principal, by role name."""
    found = {}
    for r in resources:
        if r.type == "aws:iam/role:Role":
            doc = json.loads(r.inputs["assumeRolePolicy"])
            if any(st.get("Principal") == {"Service": "pods.eks.amazonaws.com"} for st in doc["Statement"]):
                found[r.name] = doc
    return found


def _assert_pinned(trusts: dict[str, dict[str, Any]], account: str) -> None:
    for name, doc in trusts.items():
        for st in doc["Statement"]:
            assert st["Action"] == ["sts:AssumeRole", "sts:TagSession"], name
            assert st.get("Condition") == {"StringEquals": {"aws:SourceAccount": account}}, f"{name}: {st}"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_pod_identity_trust_is_pinned_to_the_stack_account(stack: str) -> None:
    trusts = _pod_identity_trusts(cached_run(stack).resources)
    # One role per workload with bucket access, plus the EBS CSI driver's.
    assert set(trusts) == {f"identities-{w}" for w in IDENTITY_WORKLOADS} | {"cluster-ebs-csi", "karpenter-controller"}
    _assert_pinned(trusts, stack_account(load_stack_config(stack)))


def test_trust_account_comes_from_the_providers_caller_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another account answering getCallerIdentity must show up in every trust: nothing is hard-coded.
    calls: list[tuple[str, str]] = []
    answer = PlatformMocks.call

    def recording(self: PlatformMocks, args: Any) -> Any:
        calls.append((args.token, args.provider))
        return answer(self, args)

    monkeypatch.setattr(PlatformMocks, "call", recording)
    run = run_stack("dev", overrides={"imageDigest": DIGEST, "aws:allowedAccountIds": ["444455556666"]})
    _assert_pinned(_pod_identity_trusts(run.resources), "444455556666")
    (aws_provider,) = run.of_type("pulumi:providers:aws")
    # One call, through the stack's explicit provider (its region and credentials), not the default one.
    assert [token for token, _ in calls] == ["aws:index/getCallerIdentity:getCallerIdentity"]
    assert calls[0][1].startswith(f"{aws_provider.urn}::")


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_emitted_serving_policy_cannot_write(stack: str) -> None:
    run = cached_run(stack)
    serving = [r for r in run.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "identities-serving-bucket"]
    assert len(serving) == 1
    assert write_actions(json.loads(serving[0].inputs["policy"])) == set()


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_no_inline_policy_for_the_scheduler(stack: str) -> None:
    names = {r.name for r in cached_run(stack).of_type("aws:iam/role:Role")}
    assert not any(SA_DASK_SCHEDULER in n for n in names)


KARPENTER_REFERENCE_ACTIONS = frozenset(
    {
        # Karpenter's own controller policy: the getting-started CloudFormation template of
        # aws/karpenter-provider-aws (KarpenterControllerPolicy), action by action.
        "ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate", "ec2:CreateTags",
        "ec2:TerminateInstances", "ec2:DeleteLaunchTemplate",
        "ec2:DescribeAvailabilityZones", "ec2:DescribeImages", "ec2:DescribeInstances",
        "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets",
        "ssm:GetParameter", "pricing:GetProducts",
        "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage",
        "iam:PassRole", "iam:CreateInstanceProfile", "iam:TagInstanceProfile", "iam:AddRoleToInstanceProfile",
        "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile", "iam:GetInstanceProfile",
        "eks:DescribeCluster",
    }
)  # fmt: skip
KARPENTER_EXTRA_ACTIONS = {
    "iam:ListInstanceProfiles": "newer controllers list the instance profiles they own to garbage-collect "
    "them (terraform-aws-eks's karpenter module grants it); read-only",
}
"""Actions granted beyond the reference, each with its reason."""


def test_karpenter_controller_policy_matches_karpenters_reference_action_by_action() -> None:
    policy = karpenter_controller_policy(
        region="eu-west-1",
        account_id="111122223333",
        cluster_name="pc-dev",
        node_role_arn="arn:aws:iam::111122223333:role/karpenter-node",
        queue_arn="arn:aws:sqs:eu-west-1:111122223333:karpenter",
    )
    granted = {a for st in policy["Statement"] if st["Effect"] == "Allow" for a in _actions(st)}
    assert KARPENTER_REFERENCE_ACTIONS - granted == set(), "an action Karpenter's reference grants is missing"
    assert granted - KARPENTER_REFERENCE_ACTIONS == set(KARPENTER_EXTRA_ACTIONS)
    assert least_privilege_violations(policy) == []


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)
