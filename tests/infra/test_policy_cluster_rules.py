"""The policy pack's cluster rules (node autoscaler, metrics-server, NetworkPolicy enforcement, IMDSv2
with hop limit 1, encrypted root volumes, protected stateful resources in prod, least-privilege IAM):
each on a compliant and a non-compliant input, through pulumi-policy's own objects, and over every
stack the program declares (where each rule must also find what it checks, or it would pass vacuously).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy

from policy import rules
from policy.pack import policies
from policy.rules import StackResource
from tests.infra.harness import AWS_STACKS, STACKS, cached_run

LT_OK = {
    "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
    "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeType": "gp3", "encrypted": "true"}}],
}
NODE_CLASS_OK = {
    "spec": {
        "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": True, "volumeType": "gp3"}}],
    }
}
VPC_CNI_OK = {"addonName": "vpc-cni", "configurationValues": json.dumps({"enableNetworkPolicy": "true"})}
SCOPED_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/models/*"]}],
}


def _set(props: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(props)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


RESOURCE_CASES = [
    # (rule, type, compliant, non-compliant, fragment of the message)
    ("nodes-imdsv2-hop-limit-1", rules.LAUNCH_TEMPLATE, LT_OK,
     _set(LT_OK, ("metadataOptions", "httpPutResponseHopLimit"), 2), "must be 1"),
    ("nodes-imdsv2-hop-limit-1", rules.LAUNCH_TEMPLATE, LT_OK,
     _set(LT_OK, ("metadataOptions", "httpTokens"), "optional"), "must be 'required'"),
    ("nodes-imdsv2-hop-limit-1", rules.LAUNCH_TEMPLATE, LT_OK, _set(LT_OK, ("metadataOptions",), ...),
     "metadataOptions missing"),
    ("nodes-imdsv2-hop-limit-1", rules.KARPENTER_NODE_CLASS, NODE_CLASS_OK,
     _set(NODE_CLASS_OK, ("spec", "metadataOptions", "httpPutResponseHopLimit"), 2), "must be 1"),
    ("nodes-imdsv2-hop-limit-1", rules.EKS_NODE_GROUP, {"launchTemplate": {"id": "lt-1", "version": "1"}},
     {"diskSize": 50}, "no launch template"),
    ("nodes-encrypted-root-volumes", rules.LAUNCH_TEMPLATE, LT_OK,
     _set(LT_OK, ("blockDeviceMappings", 0, "ebs", "encrypted"), "false"), "ebs.encrypted must be true"),
    ("nodes-encrypted-root-volumes", rules.LAUNCH_TEMPLATE, LT_OK, _set(LT_OK, ("blockDeviceMappings",), ...),
     "no blockDeviceMappings"),
    ("nodes-encrypted-root-volumes", rules.KARPENTER_NODE_CLASS, NODE_CLASS_OK,
     _set(NODE_CLASS_OK, ("spec", "blockDeviceMappings", 0, "ebs", "encrypted"), False), "ebs.encrypted must be true"),
    ("network-policy-enforced", rules.EKS_ADDON, VPC_CNI_OK, {"addonName": "vpc-cni"}, "enableNetworkPolicy"),
    ("network-policy-enforced", rules.EKS_ADDON, VPC_CNI_OK,
     {**VPC_CNI_OK, "configurationValues": json.dumps({"enableNetworkPolicy": "false"})}, "enableNetworkPolicy"),
    ("iam-least-privilege", "aws:iam/rolePolicy:RolePolicy", {"policy": json.dumps(SCOPED_POLICY)},
     {"policy": json.dumps(_set(SCOPED_POLICY, ("Statement", 0, "Resource"), "*"))}, "wildcard resource '*'"),
    ("iam-least-privilege", "aws:iam/policy:Policy", {"policy": json.dumps(SCOPED_POLICY)},
     {"policy": json.dumps(_set(SCOPED_POLICY, ("Statement", 0, "Action"), "s3:*"))}, "wildcard action 's3:*'"),
]  # fmt: skip


def _opts(protect: bool = False) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _by_name() -> dict[str, Any]:
    return {p.name: p for p in policies()}


@pytest.mark.parametrize(
    ("name", "type_", "good", "bad", "fragment"),
    RESOURCE_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(RESOURCE_CASES)],
)
def test_resource_rule_on_compliant_and_non_compliant_input(
    name: str, type_: str, good: dict[str, Any], bad: dict[str, Any], fragment: str
) -> None:
    check = next(r.check for r in rules.RESOURCE_RULES if r.name == name)
    assert check(type_, good) == []
    found = check(type_, bad)
    assert found and any(fragment in m for m in found), found
    # The same through the policy object the CLI runs, with pulumi-policy's unknown-checking proxy.
    reported: list[str] = []
    args = ResourceValidationArgs(type_, unknown_checking_proxy(bad), f"urn:{type_}", "r", _opts(), None)
    _by_name()[name].validate(args, lambda msg, urn=None: reported.append(msg))
    assert reported == found


def test_other_addons_and_types_are_left_alone() -> None:
    assert rules.network_policy_enforced(rules.EKS_ADDON, {"addonName": "coredns"}) == []
    assert rules.nodes_imdsv2_hop_limit_1("aws:s3/bucket:Bucket", {}) == []
    assert rules.nodes_encrypted_root_volumes(rules.EKS_NODE_GROUP, {"launchTemplate": {"id": "x"}}) == []


def _stack(urn_stack: str, protect: bool = True) -> list[StackResource]:
    def res(type_: str, name: str, props: dict[str, Any] | None = None, guarded: bool = False) -> StackResource:
        return StackResource(type_, f"urn:pulumi:{urn_stack}::purchase-classifier::{type_}::{name}", props or {},
                             protect=guarded)  # fmt: skip

    return [
        res(rules.EKS_CLUSTER, "eks", guarded=protect),
        res(rules.KMS_KEY, "key", guarded=protect),
        res("aws:s3/bucket:Bucket", "bucket", guarded=protect),
        res(rules.ECR_REPOSITORY, "repo", guarded=protect),
        res("aws:ec2/subnet:Subnet", "subnet"),
        res(rules.EKS_ADDON, "metrics", {"addonName": "metrics-server"}),
        res(rules.HELM_RELEASE, "karpenter", {"chart": "oci://public.ecr.aws/karpenter/karpenter"}),
        res(rules.KARPENTER_NODE_POOL, "pool"),
    ]


def _without(resources: list[StackResource], type_: str) -> list[StackResource]:
    return [r for r in resources if r.type != type_]


def test_stack_rules_on_compliant_and_non_compliant_stacks() -> None:
    good = _stack("prod")
    for rule in rules.STACK_RULES[1:]:
        assert rule.check(good) == [], rule.name
    assert rules.autoscaler_present(_without(good, rules.HELM_RELEASE)) == [
        ("urn:pulumi:prod::purchase-classifier::aws:eks/cluster:Cluster::eks",
         "no Karpenter Helm release: nothing scales the cluster's nodes")
    ]  # fmt: skip
    assert "no Karpenter NodePool" in rules.autoscaler_present(_without(good, rules.KARPENTER_NODE_POOL))[0][1]
    assert "metrics-server" in rules.metrics_server_present(_without(good, rules.EKS_ADDON))[0][1]
    private = [
        StackResource(r.type, r.urn, {"vpcConfig": {"endpointPublicAccess": False}})
        if r.type == rules.EKS_CLUSTER
        else r
        for r in good
    ]
    ((urn, message),) = rules.private_api_reachable(private)
    assert urn.endswith("::eks") and "no ingress rule on 443" in message
    ingress = StackResource(
        rules.SG_INGRESS_RULE,
        f"urn:pulumi:prod::purchase-classifier::{rules.SG_INGRESS_RULE}::api",
        {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443},
    )
    assert rules.private_api_reachable([*private, ingress]) == []
    unprotected = rules.stateful_resources_protected(_stack("prod", protect=False))
    assert len(unprotected) == 4 and all("must be protected in stack 'prod'" in m for _, m in unprotected)
    assert rules.stateful_resources_protected(_stack("dev", protect=False)) == []  # dev may be destroyed
    log_group = StackResource(
        rules.LOG_GROUP, "urn:pulumi:prod::purchase-classifier::" + rules.LOG_GROUP + "::logs", {}
    )
    assert rules.stateful_resources_protected([log_group]) == [
        (log_group.urn, f"{rules.LOG_GROUP} is stateful and must be protected in stack 'prod'")
    ]


def test_stack_rules_through_pulumi_policy_read_protect_from_options() -> None:
    def resource(type_: str, protect: bool) -> PolicyResource:
        urn = f"urn:pulumi:prod::purchase-classifier::{type_}::x"
        return PolicyResource(type_, unknown_checking_proxy({}), urn, "x", _opts(protect), None, None, [], {})

    policy = _by_name()["prod-stateful-protected"]
    reported: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs([resource(rules.KMS_KEY, True)]), lambda m, urn=None: reported.append((m, urn)))
    assert reported == []
    policy.validate(
        StackValidationArgs([resource(rules.KMS_KEY, False)]), lambda m, urn=None: reported.append((m, urn))
    )
    assert reported == [("aws:kms/key:Key is stateful and must be protected in stack 'prod'",
                         "urn:pulumi:prod::purchase-classifier::aws:kms/key:Key::x")]  # fmt: skip


def _stack_resources(stack: str) -> list[StackResource]:
    run = cached_run(stack)
    return [
        StackResource(r.type, r.urn, r.inputs, frozenset(r.dependencies), bool(r.options["protect"]))
        for r in run.resources
    ]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("rule", rules.STACK_RULES, ids=lambda r: r.name)
def test_every_stack_passes_stack_rule(stack: str, rule: rules.StackRuleSpec) -> None:
    assert rule.check(_stack_resources(stack)) == []


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_cluster_rules_find_what_they_check_in_every_eks_stack(stack: str) -> None:
    """Guards against vacuous passes: every resource type the new rules judge is in each EKS stack."""
    types = {r.type for r in cached_run(stack).resources}
    assert {rules.LAUNCH_TEMPLATE, rules.KARPENTER_NODE_CLASS, rules.EKS_NODE_GROUP, rules.EKS_ADDON} <= types
    assert {rules.HELM_RELEASE, rules.KARPENTER_NODE_POOL, rules.KMS_KEY} <= types
    assert types & rules.IAM_POLICY_TYPES


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_undoing_a_cluster_invariant_is_caught_on_the_real_stack(stack: str) -> None:
    """The rules run on the program's own resources with one invariant undone each."""
    run = cached_run(stack)
    by_type = {r.type: r for r in run.resources}
    vpc_cni = next(r for r in run.of_type(rules.EKS_ADDON) if r.inputs["addonName"] == "vpc-cni")
    assert rules.network_policy_enforced(rules.EKS_ADDON, {**vpc_cni.inputs, "configurationValues": "{}"})
    lt = by_type[rules.LAUNCH_TEMPLATE].inputs
    assert rules.nodes_imdsv2_hop_limit_1(
        rules.LAUNCH_TEMPLATE, _set(lt, ("metadataOptions", "httpPutResponseHopLimit"), 2)
    )
    nc = by_type[rules.KARPENTER_NODE_CLASS].inputs
    assert rules.nodes_encrypted_root_volumes(
        rules.KARPENTER_NODE_CLASS, _set(nc, ("spec", "blockDeviceMappings", 0, "ebs", "encrypted"), False)
    )
    resources = _stack_resources(stack)
    assert rules.metrics_server_present(
        [r for r in resources if not (r.type == rules.EKS_ADDON and r.props.get("addonName") == "metrics-server")]
    )
    assert rules.autoscaler_present([r for r in resources if r.type != rules.KARPENTER_NODE_POOL])
    if stack == "prod":
        assert rules.stateful_resources_protected([StackResource(r.type, r.urn, r.props) for r in resources])
