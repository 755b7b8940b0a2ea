"""Each policy rule against a compliant and a non-compliant resource, plus the pulumi-policy wrapping.

The rules are pure functions over (type token, camelCase props), so they are exercised here without
a Pulumi CLI; the wrapper tests then drive the real ``ResourceValidationPolicy`` /
``StackValidationPolicy`` objects with pulumi-policy's own argument types and unknown-value proxy.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy import rules
from policy.pack import policies
from policy.rules import StackResource

DIGEST_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/purchase-classifier@sha256:" + "ab" * 32
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CRONJOB = "kubernetes:batch/v1:CronJob"


def _container(**overrides: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "server",
        "image": DIGEST_IMAGE,
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    container.update(overrides)
    return container


def _pod(*containers: dict[str, Any], **pod: Any) -> dict[str, Any]:
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": list(containers),
        **pod,
    }


def deployment(*containers: dict[str, Any], **pod: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serving"},
        "spec": {"template": {"spec": _pod(*(containers or (_container(),)), **pod)}},
    }


def cronjob(*containers: dict[str, Any]) -> dict[str, Any]:
    spec = _pod(*(containers or (_container(name="train"),)))
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "train"},
        "spec": {"schedule": "0 3 * * 1", "jobTemplate": {"spec": {"template": {"spec": spec}}}},
    }


# --- Kubernetes workloads --------------------------------------------------------------------------


@pytest.mark.parametrize("build,type_", [(deployment, DEPLOYMENT), (cronjob, CRONJOB)])
def test_compliant_workloads_pass_every_rule(build: Any, type_: str) -> None:
    assert rules.check_resource(type_, build()) == {}


@pytest.mark.parametrize(
    "image",
    [
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/purchase-classifier:latest",
        "purchase-classifier",
        "repo@sha256:abc",
        "repo@sha256:" + "AB" * 32,
        "repo@sha512:" + "ab" * 64,
        None,
    ],
)
def test_images_by_digest_rejects_tags(image: str | None) -> None:
    found = rules.images_by_digest(DEPLOYMENT, deployment(_container(image=image)))
    assert len(found) == 1 and "not pinned by digest" in found[0]


def test_images_by_digest_reaches_cronjob_init_containers() -> None:
    props = cronjob()
    pod = props["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["initContainers"] = [_container(name="wait", image="busybox:1.36")]
    found = rules.images_by_digest(CRONJOB, props)
    assert found == ["train initContainers[wait]: image 'busybox:1.36' is not pinned by digest "
                     "(want <registry>/<repo>@sha256:<64 hex>)"]  # fmt: skip


def test_non_workloads_are_ignored_by_container_rules() -> None:
    service = {"spec": {"template": {"spec": {"containers": [{"image": "x:latest"}]}}}}
    for rule in (rules.images_by_digest, rules.containers_non_root, rules.containers_resource_limits):
        assert rule("kubernetes:core/v1:Service", service) == []


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"runAsNonRoot": False}, "runAsNonRoot must be true"),
        ({"runAsUser": 0}, "runAsUser is 0"),
        ({"privileged": True}, "privileged containers are forbidden"),
        ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation must be false"),
        ({"capabilities": {"drop": ["NET_RAW"]}}, "capabilities.drop must include ALL"),
    ],
)
def test_containers_non_root_violations(patch: dict[str, Any], expected: str) -> None:
    container = _container()
    container["securityContext"].update(patch)
    found = rules.containers_non_root(DEPLOYMENT, deployment(container))
    assert any(expected in m for m in found), found


def test_non_root_inherited_from_pod_context_counts() -> None:
    container = _container()
    del container["securityContext"]["runAsNonRoot"]
    assert rules.containers_non_root(DEPLOYMENT, deployment(container)) == []
    props = deployment(container)
    props["spec"]["template"]["spec"]["securityContext"] = {}
    assert "runAsNonRoot must be true" in rules.containers_non_root(DEPLOYMENT, props)[0]


@pytest.mark.parametrize("limits", [None, {}, {"cpu": "1"}, {"memory": "1Gi"}])
def test_containers_need_cpu_and_memory_limits(limits: dict[str, str] | None) -> None:
    container = _container(resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": limits})
    found = rules.containers_resource_limits(DEPLOYMENT, deployment(container))
    assert len(found) == 1 and "resources.limits missing" in found[0]


@pytest.mark.parametrize("value", [False, None])
def test_containers_need_read_only_root_fs(value: bool | None) -> None:
    container = _container()
    container["securityContext"]["readOnlyRootFilesystem"] = value
    assert rules.containers_read_only_root_fs(DEPLOYMENT, deployment(container)) == [
        "serving containers[server]: securityContext.readOnlyRootFilesystem must be true"
    ]


# --- S3 --------------------------------------------------------------------------------------------

SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
PAB = rules.BUCKET_PUBLIC_ACCESS_BLOCK
BUCKET = "aws:s3/bucket:Bucket"


def _sse(algorithm: str | None) -> dict[str, Any]:
    return {"bucket": "b", "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": algorithm}}]}


@pytest.mark.parametrize("algorithm", ["aws:kms", "aws:kms:dsse", "AES256"])
def test_bucket_encryption_accepts_real_algorithms(algorithm: str) -> None:
    assert rules.bucket_encryption_valid(SSE, _sse(algorithm)) == []


@pytest.mark.parametrize("props", [_sse(None), _sse("none"), {"bucket": "b", "rules": []}, {"bucket": "b"}])
def test_bucket_encryption_rejects_missing_or_bogus(props: dict[str, Any]) -> None:
    assert rules.bucket_encryption_valid(SSE, props)


def test_public_access_block_needs_all_four_flags() -> None:
    good = dict.fromkeys(rules.PUBLIC_ACCESS_FLAGS, True)
    assert rules.bucket_not_public(PAB, good) == []
    bad = {**good, "restrictPublicBuckets": False}
    assert rules.bucket_not_public(PAB, bad) == ["public access block must set restrictPublicBuckets to true"]


@pytest.mark.parametrize(
    "type_,props",
    [
        (BUCKET, {"acl": "public-read"}),
        ("aws:s3/bucketAclV2:BucketAclV2", {"acl": "public-read-write"}),
        (
            "aws:s3/bucketAcl:BucketAcl",
            {"accessControlPolicy": {"grants": [
                {"grantee": {"type": "Group", "uri": "http://acs.amazonaws.com/groups/global/AllUsers"},
                 "permission": "READ"}]}},
        ),
        (
            rules.BUCKET_POLICY,
            {"policy": json.dumps({"Statement": [{"Sid": "open", "Effect": "Allow", "Principal": "*",
                                                  "Action": "s3:GetObject", "Resource": "*"}]})},
        ),
        (
            rules.BUCKET_POLICY,
            {"policy": json.dumps({"Statement": {"Effect": "Allow", "Principal": {"AWS": ["*"]},
                                                 "Action": "s3:*", "Resource": "*"}})},
        ),
    ],
)  # fmt: skip
def test_bucket_not_public_rejects_public_acls_and_policies(type_: str, props: dict[str, Any]) -> None:
    assert rules.bucket_not_public(type_, props)


def test_bucket_not_public_accepts_private_bucket_and_deny_policy() -> None:
    deny = {
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
    }
    assert rules.bucket_not_public(BUCKET, {"bucketPrefix": "pc-", "acl": "private"}) == []
    assert rules.bucket_not_public(rules.BUCKET_POLICY, {"policy": json.dumps(deny)}) == []


def test_stack_rule_requires_encryption_and_public_access_block_per_bucket() -> None:
    bucket = StackResource(BUCKET, "urn:bucket")
    other = StackResource(BUCKET, "urn:other")
    sse = StackResource(SSE, "urn:sse", _sse("aws:kms"), frozenset({"urn:bucket", "urn:key"}))
    pab = StackResource(PAB, "urn:pab", {}, frozenset({"urn:bucket"}))
    assert rules.bucket_companions([bucket, sse, pab]) == []
    assert rules.bucket_companions([bucket, other, sse, pab]) == [
        ("urn:other", "bucket has no server-side encryption configuration"),
        ("urn:other", "bucket has no BucketPublicAccessBlock"),
    ]
    assert rules.bucket_companions([bucket, pab]) == [
        ("urn:bucket", "bucket has no server-side encryption configuration")
    ]
    inline = StackResource(BUCKET, "urn:bucket", {"serverSideEncryptionConfiguration": {"rule": {}}})
    assert rules.bucket_companions([inline, pab]) == []


# --- ECR / EKS -------------------------------------------------------------------------------------

ECR_OK: dict[str, Any] = {
    "imageTagMutability": "IMMUTABLE",
    "imageScanningConfiguration": {"scanOnPush": True},
}
EKS_OK: dict[str, Any] = {
    "encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:aws:kms:eu-west-1:1:key/k"}},
    "enabledClusterLogTypes": ["api", "audit", "authenticator", "controllerManager"],
}


def test_ecr_rule() -> None:
    assert rules.ecr_immutable_and_scanned(rules.ECR_REPOSITORY, ECR_OK) == []
    mutable = {**ECR_OK, "imageTagMutability": "MUTABLE"}
    assert "must be 'IMMUTABLE'" in rules.ecr_immutable_and_scanned(rules.ECR_REPOSITORY, mutable)[0]
    unscanned = {**ECR_OK, "imageScanningConfiguration": {"scanOnPush": False}}
    assert rules.ecr_immutable_and_scanned(rules.ECR_REPOSITORY, unscanned) == [
        "imageScanningConfiguration.scanOnPush must be true"
    ]
    assert len(rules.ecr_immutable_and_scanned(rules.ECR_REPOSITORY, {})) == 2


def test_eks_rules() -> None:
    assert rules.eks_secrets_encrypted(rules.EKS_CLUSTER, EKS_OK) == []
    assert rules.eks_control_plane_logs(rules.EKS_CLUSTER, EKS_OK) == []
    no_key = copy.deepcopy(EKS_OK)
    no_key["encryptionConfig"]["provider"] = {}
    assert rules.eks_secrets_encrypted(rules.EKS_CLUSTER, no_key)
    assert rules.eks_secrets_encrypted(rules.EKS_CLUSTER, {})
    few_logs = {**EKS_OK, "enabledClusterLogTypes": ["api"]}
    assert rules.eks_control_plane_logs(rules.EKS_CLUSTER, few_logs) == [
        "enabledClusterLogTypes is missing audit, authenticator"
    ]


# --- the pulumi-policy wrapping --------------------------------------------------------------------


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _resource_args(type_: str, props: dict[str, Any]) -> ResourceValidationArgs:
    return ResourceValidationArgs(type_, unknown_checking_proxy(props), f"urn:{type_}", "r", _opts(), None)


def _by_name() -> dict[str, Any]:
    return {p.name: p for p in policies()}


def test_pack_is_all_mandatory_and_names_unique() -> None:
    pack = policies()
    names = [p.name for p in pack]
    assert len(names) == len(set(names)) == len(rules.RESOURCE_RULES) + len(rules.STACK_RULES)
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in pack)
    assert sum(isinstance(p, StackValidationPolicy) for p in pack) == len(rules.STACK_RULES)
    assert all(isinstance(p, ResourceValidationPolicy | StackValidationPolicy) for p in pack)


@pytest.mark.parametrize(
    "name,type_,good,bad",
    [
        ("images-by-digest", DEPLOYMENT, deployment(), deployment(_container(image="x:latest"))),
        ("ecr-immutable-scanned", rules.ECR_REPOSITORY, ECR_OK, {**ECR_OK, "imageTagMutability": "MUTABLE"}),
        ("eks-control-plane-logs", rules.EKS_CLUSTER, EKS_OK, {**EKS_OK, "enabledClusterLogTypes": []}),
        ("s3-never-public", PAB, dict.fromkeys(rules.PUBLIC_ACCESS_FLAGS, True), {}),
    ],
)
def test_resource_policies_report_through_pulumi_policy(
    name: str, type_: str, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    policy = _by_name()[name]
    reported: list[tuple[str, str | None]] = []
    policy.validate(_resource_args(type_, good), lambda msg, urn=None: reported.append((msg, urn)))
    assert reported == []
    policy.validate(_resource_args(type_, bad), lambda msg, urn=None: reported.append((msg, urn)))
    assert reported and all(urn is None for _, urn in reported)


def test_unknown_values_propagate_so_preview_reports_cannot_check() -> None:
    """A rule must not pass or fail on a preview placeholder: the proxy's error has to escape."""
    policy = _by_name()["images-by-digest"]
    props = deployment(_container(image=UNKNOWN_STRING_VALUE))
    with pytest.raises(UnknownValueError):
        policy.validate(_resource_args(DEPLOYMENT, props), lambda msg, urn=None: None)


def test_stack_policy_links_companions_by_dependency() -> None:
    def resource(type_: str, urn: str, deps: list[PolicyResource]) -> PolicyResource:
        props = unknown_checking_proxy({"bucket": UNKNOWN_STRING_VALUE})  # preview: id not known yet
        return PolicyResource(type_, props, urn, urn, _opts(), None, None, deps, {})

    bucket = resource(BUCKET, "urn:bucket", [])
    bucket_props_free = PolicyResource(BUCKET, unknown_checking_proxy({}), "urn:b2", "b2", _opts(), None, None, [], {})
    sse = resource(SSE, "urn:sse", [bucket])
    pab = resource(PAB, "urn:pab", [bucket])
    policy = _by_name()[rules.STACK_RULE_NAME]

    reported: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs([bucket, sse, pab]), lambda msg, urn=None: reported.append((msg, urn)))
    assert reported == []
    policy.validate(
        StackValidationArgs([bucket, bucket_props_free, sse, pab]),
        lambda msg, urn=None: reported.append((msg, urn)),
    )
    assert {urn for _, urn in reported} == {"urn:b2"} and len(reported) == 2
