"""Stack config parsing: every stack file parses; every kind of mistake names key, value and rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from infra.checks.capacity import capacity_problems
from infra.config import ConfigError, config_reference_markdown, parse_config
from infra.mockrun import load_stack_config, to_pulumi_config
from infra.quantity import cpu_millicores, memory_bytes
from infra.schema import Protection, StackConfig

ROOT = Path(__file__).resolve().parents[2]
NS = "purchase-classifier:"
SECRET_DB = {f"{NS}databaseUrl": "postgresql+psycopg://u:p@db/x"}


def _parse(raw: dict[str, Any], stack: str = "t", secrets: dict[str, str] | None = None) -> StackConfig:
    config, secret_keys = to_pulumi_config(raw, secrets if secrets is not None else SECRET_DB)
    return parse_config(config, secret_keys=secret_keys, stack=stack, aws_region=raw.get("aws:region"))


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``purchase-classifier:a.b.c`` set (``...`` deletes it)."""
    raw = copy.deepcopy(raw)
    top, *rest = path.split(".")
    if not rest:
        if value is ...:
            raw.pop(NS + top, None)
        else:
            raw[NS + top] = value
        return raw
    node = raw[NS + top]
    for part in rest[:-1]:
        node = node[part]
    if value is ...:
        node.pop(rest[-1])
    else:
        node[rest[-1]] = value
    return raw


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return load_stack_config("dev", ROOT)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod", "local"])
def test_stack_files_parse(stack: str) -> None:
    cfg = _parse(load_stack_config(stack, ROOT), stack)
    assert cfg.environment == stack
    assert cfg.is_eks == (stack != "local")
    assert cfg.workloads.namespace == "purchase-classifier"


def test_env_shapes() -> None:
    dev, staging, prod = (_parse(load_stack_config(s, ROOT), s) for s in ("dev", "staging", "prod"))
    assert dev.network and staging.network and prod.network
    assert dev.network.nat_gateways == "single" and len(dev.network.availability_zones) == 2
    assert prod.network.nat_gateways == "perAz" and len(prod.network.availability_zones) == 3
    assert dev.cluster.node_pools and prod.cluster.node_pools
    assert dev.cluster.node_pools.dask.capacity_types == ["spot", "on-demand"]
    assert prod.cluster.node_pools.dask.capacity_types == ["on-demand"]  # a reclaim must not stall predict
    assert dev.protection == Protection(protect=False, retain_on_delete=False)
    assert staging.protection == prod.protection == Protection(protect=True, retain_on_delete=True)
    assert not prod.cluster.endpoint_public_access and not staging.cluster.endpoint_public_access


def test_image_digest_is_top_level_scalar_for_promotion() -> None:
    import yaml

    for stack in ("dev", "staging", "prod", "local"):
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert isinstance(data[f"{NS}imageDigest"], str)


def test_empty_digest_means_none_and_valid_digest_parses(dev: dict[str, Any]) -> None:
    assert _parse(dev).image_digest is None
    digest = "sha256:" + "ab" * 32
    assert _parse(_set(dev, "imageDigest", digest)).image_digest == digest


def test_secret_stays_secret(dev: dict[str, Any]) -> None:
    cfg = _parse(dev)
    assert cfg.database_url is not None
    assert "postgresql" not in repr(cfg) and "postgresql" not in str(cfg.database_url)


D = "sha256:" + "ab" * 32

BAD_CONFIGS: list[tuple[str, str, Any, str]] = [
    # (id, path, value, expected fragment of the message)
    (
        "wrong type",
        "cluster.nodePools.dask.maxInstanceCpu",
        "lots",
        "purchase-classifier:cluster.nodePools.dask.maxInstanceCpu: got 'lots'",
    ),
    (
        "wrong type bool",
        "cluster.endpointPublicAccess",
        "maybe",
        "cluster.endpointPublicAccess: got 'maybe'; Input should be a valid boolean",
    ),
    (
        "unknown top-level key",
        "clusterr",
        {"mode": "eks"},
        "purchase-classifier:clusterr: unknown key; allowed keys here: alerting, cluster,",
    ),
    (
        "unknown nested key",
        "workloads.serving.replica",
        2,
        "purchase-classifier:workloads.serving.replica: unknown key; allowed keys here: "
        "allowedClientNamespaces, autoscaling,",
    ),
    (
        "missing required key",
        "cluster.mode",
        ...,
        "purchase-classifier:cluster.mode: required key is missing",
    ),
    ("missing required section", "workloads", ..., "purchase-classifier:workloads: required key is missing"),
    (
        "out of range",
        "workloads.serving.reviewThreshold",
        1.5,
        "workloads.serving.reviewThreshold: got 1.5; Input should be less than 1",
    ),
    (
        "out of range int",
        "cluster.systemNodes.diskSizeGb",
        5,
        "diskSizeGb: got 5; Input should be greater than or equal to 20",
    ),
    ("bad enum", "cluster.mode", "gke", "cluster.mode: got 'gke'; Input should be 'eks' or 'existing'"),
    (
        "bad nat",
        "network.natGateways",
        "two",
        "network.natGateways: got 'two'; Input should be 'single' or 'perAz'",
    ),
    (
        "sizes unordered",
        "cluster.systemNodes.desiredSize",
        9,
        "minSize <= desiredSize <= maxSize, got 1 <= 9 <= 2",
    ),
    ("pool sizes unordered", "cluster.nodePools.dask.minInstanceCpu", 8, "minInstanceCpu 8 is above maxInstanceCpu 4"),
    (
        "pool with no EC2 size",
        "cluster.nodePools.general",
        {
            "capacityTypes": ["on-demand"],
            "instanceCategories": ["m"],
            "minInstanceCpu": 5,
            "maxInstanceCpu": 7,
            "limits": {"cpu": "16", "memory": "64Gi"},
        },
        "cluster.nodePools.general.minInstanceCpu/maxInstanceCpu: instance sizes 5..7 vCPUs include no EC2 size",
    ),
    ("bad capacity type", "cluster.nodePools.dask.capacityTypes", ["SPOT"], "Input should be 'spot' or 'on-demand'"),
    ("capacity type twice", "cluster.nodePools.dask.capacityTypes", ["spot", "spot"], "lists a value twice"),
    (
        "unsupported cluster version",
        "cluster.version",
        "1.32",
        "version '1.32' is not a supported EKS version; supported: 1.35",
    ),
    (
        "duplicate admin",
        "cluster.adminRoleArns",
        ["arn:aws:iam::111122223333:role/a", "arn:aws:iam::111122223333:role/a"],
        "['arn:aws:iam::111122223333:role/a'] listed more than once; each role gets exactly one access entry",
    ),
    (
        "worker too big for any node of its pool",
        "workloads.dask.workers.resources",
        {"requests": {"cpu": "4", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}},
        "purchase-classifier:workloads.dask.workers.resources.requests: 4 CPU / 4Gi cannot fit the largest node "
        "purchase-classifier:cluster.nodePools.dask may launch, 4 vCPU / 32 GiB (3715m and 27.8 GiB for pods)",
    ),
    (
        "autoscaling on workers",
        "workloads.dask.workers.autoscaling",
        {"minReplicas": 1, "maxReplicas": 4},
        "purchase-classifier:workloads.dask.workers.autoscaling: unknown key",
    ),
    ("tag not digest", "imageDigest", "latest", "imageDigest: got 'latest'; 'latest' is not an image digest"),
    ("bad cron", "workloads.jobs.train.schedule", "every monday", "is not a 5-field cron schedule"),
    (
        "requests above limits",
        "workloads.dask.workers.resources.requests.memory",
        "8Gi",
        "requests.memory '8Gi' is above limits.memory '4Gi'",
    ),
    (
        "memory without unit",
        "workloads.serving.resources.limits.memory",
        "512",
        "must be at least 1Mi (did you forget the unit",
    ),
    ("bad cpu", "workloads.serving.resources.limits.cpu", "lots", "'lots' is not a CPU quantity"),
    (
        "world-open endpoint",
        "cluster.publicAccessCidrs",
        ["0.0.0.0/0"],
        "opens the API endpoint to the internet",
    ),
    (
        "public without cidrs",
        "cluster.publicAccessCidrs",
        [],
        "endpointPublicAccess is true but publicAccessCidrs is empty",
    ),
    (
        "bad cidr",
        "network.cidr",
        "10.0.0.0/33",
        "network.cidr: got '10.0.0.0/33'; '10.0.0.0/33' is not a CIDR block",
    ),
    ("cidr too small", "network.cidr", "10.0.0.0/24", "has prefix /24; allowed /16 to /20"),
    ("one AZ", "network.availabilityZones", ["eu-west-1a"], "List should have at least 2 items"),
    (
        "AZ outside region",
        "network.availabilityZones",
        ["us-east-1a", "us-east-1b"],
        "not in aws:region 'eu-west-1'",
    ),
    ("bad retention", "cluster.logRetentionDays", 10, "10 is not a CloudWatch retention"),
    ("bad role arn", "cluster.adminRoleArns", ["admin"], "'admin' is not an IAM role ARN"),
    (
        "hpa min above max",
        "workloads.serving.autoscaling.minReplicas",
        5,
        "minReplicas 5 is above maxReplicas 2",
    ),
    ("bad namespace", "workloads.namespace", "Purchase_Classifier", "is not a DNS label"),
    (
        "registry in eks mode",
        "registry",
        "localhost:5001/pc",
        "registry is only used when cluster.mode is 'existing'",
    ),
    ("world private access", "cluster.privateAccess", {"cidrs": ["0.0.0.0/0"]}, "opens the API endpoint to every"),
    ("bad security group", "cluster.privateAccess", {"securityGroupIds": ["runners"]}, "'runners' is not a security"),
    ("bad AMI release", "cluster.nodeAmiRelease", "2026-10-15", "String should match pattern"),
    (
        "bad environment",
        "environment",
        "qa",
        "environment: got 'qa'; Input should be 'dev', 'staging', 'prod' or 'local'",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_with_key_value_and_rule(
    dev: dict[str, Any], path: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(_set(dev, path, value), stack="dev")
    text = str(info.value)
    assert text.startswith("invalid config for stack 'dev':")
    assert message in text, text


def test_todays_dev_sizing_is_refused_naming_the_keys(dev: dict[str, Any]) -> None:
    """Two workers of 1 CPU on 2-vCPU Dask nodes, one node's worth of limits: the sizing this stack had
    before node autoscaling, which left a worker Pending for ever."""
    raw = _set(dev, "cluster.nodePools.dask.maxInstanceCpu", 2)
    raw = _set(raw, "cluster.nodePools.dask.limits", {"cpu": "2", "memory": "16Gi"})
    with pytest.raises(ConfigError) as info:
        _parse(raw, stack="dev")
    (problem,) = info.value.problems
    assert problem.startswith("purchase-classifier:cluster.nodePools.dask.limits: at maximum scale its pods need 2")
    for key in ("cluster.nodePools.dask.maxInstanceCpu", "workloads.dask.workers.replicas"):
        assert f"purchase-classifier:{key}" in problem
    assert "allow 1" in problem


def test_a_private_endpoint_nobody_can_reach_is_refused_naming_the_key() -> None:
    staging = load_stack_config("staging", ROOT)
    with pytest.raises(ConfigError) as info:
        _parse(_set(staging, "cluster.privateAccess", ...), stack="staging")
    (problem,) = info.value.problems
    assert problem.startswith("purchase-classifier:cluster.privateAccess: the API endpoint is private")
    assert "purchase-classifier:cluster.privateAccess.cidrs" in problem
    assert "purchase-classifier:cluster.privateAccess.securityGroupIds" in problem
    # Either way in is enough: a runner's security group, or a public endpoint limited to CIDRs.
    by_group = _set(staging, "cluster.privateAccess", {"securityGroupIds": ["sg-0123456789abcdef0"]})
    assert _parse(by_group, stack="staging").cluster.private_access.security_group_ids == ["sg-0123456789abcdef0"]
    public = _set(_set(staging, "cluster.privateAccess", ...), "cluster.endpointPublicAccess", True)
    _parse(_set(public, "cluster.publicAccessCidrs", ["198.51.100.0/24"]), stack="staging")


def test_private_access_is_refused_where_no_eks_cluster_reads_it() -> None:
    local = load_stack_config("local", ROOT)
    with pytest.raises(ConfigError, match=r"cluster\.privateAccess: only used when cluster\.mode is 'eks'"):
        _parse(_set(local, "cluster.privateAccess", {"cidrs": ["10.0.0.0/24"]}))


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_staging_and_prod_must_pin_the_node_ami_release(stack: str) -> None:
    raw = load_stack_config(stack, ROOT)
    assert _parse(raw, stack).cluster.node_ami_release.startswith("v")
    with pytest.raises(ConfigError) as info:
        _parse(_set(raw, "cluster.nodeAmiRelease", "latest"), stack)
    (problem,) = info.value.problems
    assert problem.startswith(f"purchase-classifier:cluster.nodeAmiRelease: got 'latest' in {stack}")


def test_dev_may_float_on_the_latest_ami(dev: dict[str, Any]) -> None:
    assert _parse(dev, "dev").cluster.node_ami_release == "latest"


def test_committed_stacks_pass_the_capacity_check() -> None:
    for stack in ("dev", "staging", "prod"):
        cfg = _parse(load_stack_config(stack, ROOT), stack)
        assert capacity_problems(cfg, NS) == []


def test_plaintext_secret_is_refused(dev: dict[str, Any]) -> None:
    raw = _set(dev, "databaseUrl", "postgresql://u:hunter2@db/x")
    config, _ = to_pulumi_config(raw, {})
    with pytest.raises(ConfigError, match="is stored in plain text; it is a secret") as info:
        parse_config(config, secret_keys=[], stack="dev", aws_region="eu-west-1")
    assert "hunter2" not in str(info.value)


def test_digest_without_database_url_is_refused(dev: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="databaseUrl is required once imageDigest is set"):
        _parse(_set(dev, "imageDigest", D), secrets={})


def test_existing_mode_requires_registry_and_bucket() -> None:
    local = load_stack_config("local", ROOT)
    with pytest.raises(ConfigError, match=r"registry is required when cluster\.mode is 'existing'"):
        _parse(_set(local, "registry", ...))
    with pytest.raises(ConfigError, match=r"storage\.bucketName is required"):
        _parse(_set(local, "storage.bucketName", ...))


def test_eks_requires_region(dev: dict[str, Any]) -> None:
    raw = dict(dev)
    raw.pop("aws:region")
    with pytest.raises(ConfigError, match="aws:region: required key is missing"):
        _parse(raw)


def test_all_problems_reported_at_once(dev: dict[str, Any]) -> None:
    raw = _set(_set(dev, "cluster.mode", "gke"), "workloads.namespace", "BAD")
    with pytest.raises(ConfigError) as info:
        _parse(raw)
    assert len(info.value.problems) >= 2


def test_structured_values_arrive_as_json_like_from_the_cli(dev: dict[str, Any]) -> None:
    config, _ = to_pulumi_config(dev, {})
    assert json.loads(config[f"{NS}cluster"])["mode"] == "eks"


@pytest.mark.parametrize(("text", "millis"), [("250m", 250), ("1", 1000), ("1.5", 1500), ("2000m", 2000)])
def test_cpu_quantities(text: str, millis: int) -> None:
    assert cpu_millicores(text) == millis


@pytest.mark.parametrize(("text", "size"), [("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("1024", 1024)])
def test_memory_quantities(text: str, size: int) -> None:
    assert memory_bytes(text) == size


def test_config_reference_is_in_sync() -> None:
    page = (ROOT / "docs" / "platform.md").read_text()
    committed = page.split("<!-- config-table:start -->\n", 1)[1].split("<!-- config-table:end -->", 1)[0]
    assert committed == config_reference_markdown(), (
        "docs/platform.md's stack configuration table is stale: "
        "paste `.venv/bin/python -m infra.config` between its markers"
    )


def test_every_field_is_documented() -> None:
    for line in config_reference_markdown().splitlines():
        if line.startswith("| `purchase-classifier:"):
            assert not line.rstrip().endswith("|  |"), f"undocumented: {line}"
