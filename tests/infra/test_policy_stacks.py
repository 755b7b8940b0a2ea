"""The whole policy pack against every stack's resources, as the real program registers them.

The mock harness runs ``infra.program`` for each ``Pulumi.<stack>.yaml`` under Pulumi's mocks and
captures every resource's type and inputs (the same camelCase props CrossGuard sees); each rule's
pure function runs over all of them. A failure here is what ``pulumi preview --policy-pack policy``
would report, found without a Pulumi CLI or cloud account.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.rules import (
    BUCKET_SSE_TYPES,
    BUCKET_TYPES,
    ECR_REPOSITORY,
    EKS_CLUSTER,
    POD_TEMPLATE_PATHS,
    RESOURCE_RULES,
    StackResource,
    bucket_companions,
    containers,
)
from tests.infra.harness import AWS_STACKS, STACKS, cached_run


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("rule", RESOURCE_RULES, ids=lambda r: r.name)
def test_every_resource_passes_rule(stack: str, rule: object) -> None:
    run = cached_run(stack)
    violations = {
        f"{res.type}::{res.name}": found
        for res in run.resources
        if (found := rule.check(res.type, res.inputs))  # type: ignore[attr-defined]
    }
    assert violations == {}


@pytest.mark.parametrize("stack", STACKS)
def test_every_bucket_has_encryption_and_public_access_block(stack: str) -> None:
    run = cached_run(stack)
    resources = [StackResource(r.type, r.urn, r.inputs, frozenset(r.dependencies)) for r in run.resources]
    assert bucket_companions(resources) == []


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_rules_actually_see_the_aws_resources(stack: str) -> None:
    """Guards against a silently vacuous pack: the type tokens must match what the program emits."""
    types = {r.type for r in cached_run(stack).resources}
    assert ECR_REPOSITORY in types and EKS_CLUSTER in types
    assert types & BUCKET_TYPES and types & BUCKET_SSE_TYPES
    assert "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock" in types


@pytest.mark.parametrize("stack", STACKS)
def test_rules_actually_see_the_containers(stack: str) -> None:
    run = cached_run(stack)
    workloads = [r for r in run.resources if r.type in POD_TEMPLATE_PATHS]
    if not workloads:
        pytest.skip("this program version declares no Kubernetes workloads yet")
    assert all(list(containers(r.type, r.inputs)) for r in workloads)
    images = {c.get("image") for r in workloads for _, c in containers(r.type, r.inputs)}
    assert len(images) == 1, f"one image, one digest: {images}"


def test_a_tagged_image_would_be_caught() -> None:
    """The pack bites on program output too: swap one captured image for a tag."""
    run = cached_run("dev")
    workloads = [r for r in run.resources if r.type in POD_TEMPLATE_PATHS]
    if not workloads:
        pytest.skip("this program version declares no Kubernetes workloads yet")
    import copy

    res = workloads[0]
    props = copy.deepcopy(res.inputs)
    _, container = next(containers(res.type, props))
    container["image"] = "purchase-classifier:latest"  # type: ignore[index]
    rule = next(r for r in RESOURCE_RULES if r.name == "images-by-digest")
    assert rule.check(res.type, props)


def test_offline_scan_command_writes_a_passing_report(tmp_path: Path) -> None:
    """``python -m policy.scan`` is what the PR workflow attaches; it must pass on the committed stacks."""
    from policy.scan import main

    out = tmp_path / "policy.md"
    assert main(["--stack", "local", "--placeholder-digest", "sha256:" + "0" * 64, "--out", str(out)]) == 0
    text = out.read_text()
    assert "## local: PASS" in text and "FAIL" not in text


def test_offline_scan_fails_on_a_violation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import policy.scan as scan

    monkeypatch.setattr(scan, "scan_stack", lambda stack, digest=None: (3, ["images-by-digest: x"]))
    assert scan.main(["--stack", "dev", "--out", str(tmp_path / "r.md")]) == 1
    assert "## dev: FAIL (1)" in (tmp_path / "r.md").read_text()
