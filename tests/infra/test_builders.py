"""Pure builders: image references, subnet layout, NAT placement, kubeconfig, lifecycles."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.aws.cluster import kubeconfig
from infra.aws.network import nat_zones, subnet_layout
from infra.aws.registry import lifecycle_policy
from infra.aws.storage import lifecycle_rules
from infra.aws.tags import default_tags
from infra.images import ImageReferenceError, image_reference
from infra.mockrun import load_stack_config, to_pulumi_config
from infra.schema import Storage

DIGEST = "sha256:" + "0f" * 32


@pytest.mark.parametrize(
    "registry",
    [
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/purchase-classifier",
        "localhost:5001/purchase-classifier",
        "registry.example.org/ml/purchase-classifier",
    ],
)
def test_image_reference_pins_digest(registry: str) -> None:
    assert image_reference(registry, DIGEST) == f"{registry}@{DIGEST}"


@pytest.mark.parametrize(
    ("registry", "digest", "message"),
    [
        ("localhost:5001/pc", "latest", "looks like a tag; tags are refused"),
        ("localhost:5001/pc", "v1.2.3", "looks like a tag; tags are refused"),
        ("localhost:5001/pc:latest", DIGEST, "carries a tag ('latest'); tags are refused"),
        ("localhost:5001/pc@sha256:" + "1" * 64, DIGEST, "already contains a digest"),
        ("localhost:5001/pc", "sha256:ABC", "is not 'sha256:<64 lowercase hex>'"),
        ("", DIGEST, "is not a repository URL"),
    ],
)
def test_image_reference_refuses_tags(registry: str, digest: str, message: str) -> None:
    with pytest.raises(ImageReferenceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        image_reference(registry, digest)


@pytest.mark.parametrize("zones", [["a1", "b1"], ["a1", "b1", "c1"], ["a", "b", "c", "d", "e", "f"]])
@pytest.mark.parametrize("cidr", ["10.40.0.0/16", "10.1.0.0/20"])
def test_subnet_layout_disjoint_inside_vpc(cidr: str, zones: list[str]) -> None:
    specs = subnet_layout(cidr, zones, "pc")
    nets = [ipaddress.ip_network(s.cidr) for s in specs]
    vpc = ipaddress.ip_network(cidr)
    assert all(n.subnet_of(vpc) for n in nets)  # type: ignore[arg-type]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    for zone in zones:
        private = [s for s in specs if s.availability_zone == zone and not s.public]
        public = [s for s in specs if s.availability_zone == zone and s.public]
        assert len(private) == len(public) == 1
        assert private[0].tags["kubernetes.io/role/internal-elb"] == "1"
        assert public[0].tags["kubernetes.io/role/elb"] == "1"
        assert ipaddress.ip_network(private[0].cidr).num_addresses > ipaddress.ip_network(public[0].cidr).num_addresses


def test_subnet_layout_is_stable() -> None:
    assert subnet_layout("10.40.0.0/16", ["a", "b"], "pc") == subnet_layout("10.40.0.0/16", ["a", "b"], "pc")
    assert subnet_layout("10.40.0.0/16", ["a", "b"], "pc")[0].cidr == "10.40.0.0/19"


def test_nat_placement() -> None:
    assert nat_zones(["a", "b", "c"], "single") == {"a": "a", "b": "a", "c": "a"}
    assert nat_zones(["a", "b", "c"], "perAz") == {"a": "a", "b": "b", "c": "c"}
    with pytest.raises(ValueError, match="allowed 'single' or 'perAz'"):
        nat_zones(["a"], "none")


def test_kubeconfig_uses_exec_auth_not_static_credentials() -> None:
    cfg = kubeconfig("pc-dev", "https://x.eks.amazonaws.com", "Q0E=", "eu-west-1")
    user = cfg["users"][0]["user"]
    assert set(user) == {"exec"}
    assert user["exec"]["args"][:5] == ["--region", "eu-west-1", "eks", "get-token", "--cluster-name"]
    assert cfg["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="


def test_ecr_lifecycle_expires_untagged_by_age_and_keeps_the_newest_tagged() -> None:
    untagged, tagged = lifecycle_policy(7, 50)["rules"]
    assert untagged["selection"]["tagStatus"] == "untagged" and untagged["selection"]["countNumber"] == 7
    # Tagged images go by count, never by age: a registry that receives no new image (prod between
    # releases) keeps the one it runs and the ones before it, however old.
    assert tagged["selection"] == {
        "tagStatus": "tagged",
        "tagPatternList": ["*"],
        "countType": "imageCountMoreThan",
        "countNumber": 50,
    }
    assert tagged["action"] == {"type": "expire"} and tagged["rulePriority"] > untagged["rulePriority"]
    with pytest.raises(ValueError):
        lifecycle_policy(0, 50)
    with pytest.raises(ValueError, match="roll back"):
        lifecycle_policy(7, 1)


def test_bucket_lifecycle_expires_training_only() -> None:
    rules = lifecycle_rules(Storage(training_snapshot_expiration_days=14, noncurrent_version_expiration_days=5))
    expiring = [r for r in rules if "expiration" in r]
    assert [r["filter"]["prefix"] for r in expiring] == ["training/"]
    assert expiring[0]["expiration"]["days"] == 14
    assert any(r.get("noncurrent_version_expiration") == {"noncurrent_days": 5} for r in rules)


def test_default_tags_cannot_be_overridden() -> None:
    from infra.config import parse_config

    raw = load_stack_config("dev")
    raw["purchase-classifier:tags"] = {"project": "spoofed", "team": "ml"}
    config, keys = to_pulumi_config(raw, {"databaseUrl": "x"})
    tags = default_tags(parse_config(config, secret_keys=keys, aws_region="eu-west-1"), "dev")
    assert tags == {
        "team": "ml",
        "project": "purchase-classifier",
        "environment": "dev",
        "stack": "dev",
        "managed-by": "pulumi",
    }


def test_the_kubeconfigs_exec_command_comes_with_the_project(tmp_path: Path) -> None:
    """`aws` is installed by the project's own set-up (the locked `infra` group): the kubeconfig's exec
    command, run from the venv alone, prints an EKS token (a presigned STS request; no network)."""
    user = kubeconfig("pc-dev", "https://x", "Q0E=", "eu-west-1")["users"][0]["user"]["exec"]
    venv_bin = Path(sys.executable).parent
    command = shutil.which(user["command"], path=str(venv_bin))
    assert command is not None, f"{user['command']!r} is not in {venv_bin}"
    env = {
        "PATH": str(venv_bin),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    out = subprocess.run([command, *user["args"]], env=env, capture_output=True, text=True, timeout=120, check=True)
    token = json.loads(out.stdout)
    assert token["kind"] == "ExecCredential" and token["apiVersion"] == user["apiVersion"]
    assert token["status"]["token"].startswith("k8s-aws-v1.")
