"""The whole program, per stack file, under Pulumi mocks: resources, settings, tags, outputs."""

from __future__ import annotations

import json
from collections import Counter

import pulumi
import pytest

from infra.aws.cluster import CONTROL_PLANE_LOGS
from infra.catalog import ADDON_NAMES
from infra.mockrun import CapturedResource, StackRun, load_stack_config, run_stack, stack_account
from infra.naming import IDENTITY_WORKLOADS, PREVIEW_GROUP, PROJECT
from tests.infra.harness import AWS_STACKS, DIGEST, STACKS, cached_run

COMPONENTS = {
    "purchase-classifier:aws:Network",
    "purchase-classifier:aws:Cluster",
    "purchase-classifier:aws:Registry",
    "purchase-classifier:aws:Storage",
    "purchase-classifier:aws:Identities",
    "purchase-classifier:aws:Karpenter",
}


def one(run: StackRun, type_: str) -> CapturedResource:
    found = run.of_type(type_)
    assert len(found) == 1, f"{type_}: {len(found)} found"
    return found[0]


def types(run: StackRun) -> Counter[str]:
    return Counter(r.type for r in run.resources)


# ------------------------------------------------------------------ harness behaviour


def test_harness_captures_type_name_inputs_parent_and_provider() -> None:
    run = cached_run("dev")
    vpc = one(run, "aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.40.0.0/16"
    assert vpc.parent.endswith("purchase-classifier:aws:Network::network")
    assert vpc.provider_urn == one(run, "pulumi:providers:aws").urn
    assert vpc.urn.startswith(f"urn:pulumi:dev::{PROJECT}::")


def test_repeated_runs_in_one_process_are_independent() -> None:
    first = run_stack("dev")
    local = run_stack("local")
    second = run_stack("dev")
    assert [r.urn for r in first.resources] == [r.urn for r in second.resources] or Counter(
        r.urn for r in first.resources
    ) == Counter(r.urn for r in second.resources)
    assert not any(r.type.startswith("aws:") for r in local.resources)
    assert all(r.urn.startswith("urn:pulumi:local::") for r in local.resources)


def test_bad_config_stops_the_program_before_any_resource() -> None:
    run_error = None
    try:
        run_stack("dev", overrides={"purchase-classifier:cluster": {"mode": "eks"}})
    except pulumi.RunError as exc:
        run_error = str(exc)
    assert run_error is not None and "purchase-classifier:cluster.name: required key is missing" in run_error


# ------------------------------------------------------------------ per-stack expectations


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_eks_stacks_declare_the_whole_platform(stack: str) -> None:
    run = cached_run(stack)
    counts = types(run)
    assert set(counts) >= COMPONENTS
    for t in (
        "aws:ec2/vpc:Vpc",
        "aws:eks/cluster:Cluster",
        "aws:ecr/repository:Repository",
        "aws:s3/bucket:Bucket",
    ):
        assert counts[t] == 1, t
    assert counts["aws:eks/nodeGroup:NodeGroup"] == 1  # system only: Karpenter launches the rest
    # The workloads' identities and Karpenter's controller.
    assert counts["aws:eks/podIdentityAssociation:PodIdentityAssociation"] == len(IDENTITY_WORKLOADS) + 1
    assert counts["pulumi:providers:kubernetes"] == 1
    assert sorted(r.inputs["addonName"] for r in run.of_type("aws:eks/addon:Addon")) == sorted(ADDON_NAMES)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_components_parent_their_children(stack: str) -> None:
    run = cached_run(stack)
    component_urns = {r.urn for r in run.resources if r.type in COMPONENTS}
    for r in run.resources:
        if r.type.startswith("aws:"):
            assert r.parent in component_urns, f"{r.type} {r.name} is not inside a component"


@pytest.mark.parametrize(
    ("stack", "zones", "nats", "endpoints"),
    [
        ("dev", 2, 1, set()),
        ("staging", 3, 3, {"ecr.api", "ecr.dkr", "sts"}),
        ("prod", 3, 3, {"ecr.api", "ecr.dkr", "sts", "logs"}),
    ],
)
def test_network_per_env(stack: str, zones: int, nats: int, endpoints: set[str]) -> None:
    run = cached_run(stack)
    subnets = run.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == 2 * zones
    assert len({s.inputs["availabilityZone"] for s in subnets}) == zones
    assert all(s.inputs.get("mapPublicIpOnLaunch") is False for s in subnets)
    assert len(run.of_type("aws:ec2/natGateway:NatGateway")) == nats
    vpces = run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    gateway = [v for v in vpces if v.inputs["vpcEndpointType"] == "Gateway"]
    assert [g.inputs["serviceName"] for g in gateway] == ["com.amazonaws.eu-west-1.s3"]
    interface = {
        v.inputs["serviceName"].removeprefix("com.amazonaws.eu-west-1.")
        for v in vpces
        if v.inputs["vpcEndpointType"] == "Interface"
    }
    assert interface == endpoints
    assert all(v.inputs["privateDnsEnabled"] for v in vpces if v.inputs["vpcEndpointType"] == "Interface")


@pytest.mark.parametrize(
    ("stack", "public", "cidrs"),
    [("dev", True, ["203.0.113.0/24"]), ("staging", False, None), ("prod", False, None)],
)
def test_cluster_endpoint_exposure_encryption_and_logs(stack: str, public: bool, cidrs: list[str] | None) -> None:
    cluster = one(cached_run(stack), "aws:eks/cluster:Cluster")
    vpc = cluster.inputs["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["endpointPublicAccess"] is public
    assert vpc.get("publicAccessCidrs") == cidrs
    assert cluster.inputs["accessConfig"]["authenticationMode"] == "API"
    assert cluster.inputs["encryptionConfig"]["resources"] == ["secrets"]
    assert cluster.inputs["encryptionConfig"]["provider"]["keyArn"].startswith("arn:aws:kms:")
    assert set(cluster.inputs["enabledClusterLogTypes"]) == set(CONTROL_PLANE_LOGS)


@pytest.mark.parametrize(("stack", "days"), [("dev", 14), ("staging", 90), ("prod", 365)])
def test_control_plane_log_retention(stack: str, days: int) -> None:
    run = cached_run(stack)
    cluster = one(run, "aws:eks/cluster:Cluster")
    (group,) = [g for g in run.of_type("aws:cloudwatch/logGroup:LogGroup") if g.name == "cluster-logs"]
    assert group.inputs["name"] == f"/aws/eks/{cluster.inputs['name']}/cluster"
    assert group.inputs["retentionInDays"] == days
    assert group.urn in cluster.dependencies


@pytest.mark.parametrize(("stack", "sizes"), [("dev", (1, 2, 1)), ("staging", (2, 3, 2)), ("prod", (3, 4, 3))])
def test_system_node_group_is_on_demand_tainted_and_templated(stack: str, sizes: tuple[int, int, int]) -> None:
    run = cached_run(stack)
    group = one(run, "aws:eks/nodeGroup:NodeGroup")
    assert group.inputs["capacityType"] == "ON_DEMAND"
    assert group.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert group.inputs["scalingConfig"] == dict(zip(("minSize", "maxSize", "desiredSize"), sizes, strict=True))
    assert group.inputs["taints"] == [{"key": "CriticalAddonsOnly", "value": "true", "effect": "NO_SCHEDULE"}]
    assert "diskSize" not in group.inputs  # the launch template declares the root volume
    template = one(run, "aws:ec2/launchTemplate:LaunchTemplate")
    assert template.urn in group.dependencies
    assert template.inputs["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
    }
    (root,) = template.inputs["blockDeviceMappings"]
    assert root["deviceName"] == "/dev/xvda"
    assert root["ebs"]["volumeType"] == "gp3" and root["ebs"]["encrypted"] == "true"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_admin_access_entries(stack: str) -> None:
    run = cached_run(stack)
    entries = run.of_type("aws:eks/accessEntry:AccessEntry")
    assocs = run.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    cluster = load_stack_config(stack)["purchase-classifier:cluster"]
    # The admins get EKS's cluster-admin policy; the viewers (the CI preview role) no EKS policy at all
    # (AmazonEKSAdminViewPolicy reads Secrets), only the group of the program's read-only ClusterRole.
    policies = {a.inputs["principalArn"]: a.inputs["policyArn"].rsplit("/", 1)[1] for a in assocs}
    assert policies == {arn: "AmazonEKSClusterAdminPolicy" for arn in cluster["adminRoleArns"]}
    standard = [e for e in entries if e.inputs["type"] == "STANDARD"]  # not the nodes' (EC2_LINUX)
    groups = {e.inputs["principalArn"]: e.inputs.get("kubernetesGroups") for e in standard}
    assert groups == {arn: None for arn in cluster["adminRoleArns"]} | {
        arn: [PREVIEW_GROUP] for arn in cluster["viewerRoleArns"]
    }
    assert cluster["viewerRoleArns"] and len({e.inputs["principalArn"] for e in entries}) == len(entries)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_registry_is_immutable_scanned_encrypted_with_lifecycle(stack: str) -> None:
    run = cached_run(stack)
    repo = one(run, "aws:ecr/repository:Repository")
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS"}]
    policy = json.loads(one(run, "aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    assert policy["rules"][0]["selection"]["tagStatus"] == "untagged"


@pytest.mark.parametrize(("stack", "days"), [("dev", 14), ("staging", 60), ("prod", 180)])
def test_bucket_is_private_encrypted_versioned_tls_only(stack: str, days: int) -> None:
    run = cached_run(stack)
    block = one(run, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(
        block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    assert one(run, "aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs["rule"] == {
        "objectOwnership": "BucketOwnerEnforced"
    }
    assert one(run, "aws:s3/bucketVersioning:BucketVersioning").inputs["versioningConfiguration"]["status"] == "Enabled"
    sse = one(run, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    default = sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms" and default["kmsMasterKeyId"].startswith("arn:aws:kms:")
    policy = json.loads(one(run, "aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = one(run, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    training = next(r for r in rules if r["filter"].get("prefix") == "training/")
    assert training["expiration"]["days"] == days
    bucket = one(run, "aws:s3/bucket:Bucket").inputs
    assert "acl" not in bucket and "policy" not in bucket


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_encryption_on_everything_that_stores_data(stack: str) -> None:
    run = cached_run(stack)
    keys = run.of_type("aws:kms/key:Key")
    # Kubernetes secrets, the bucket, and the two log groups (control plane, VPC flow logs).
    assert len(keys) == 4 and all(k.inputs["enableKeyRotation"] is True for k in keys)
    groups = run.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert len(groups) == 2 and all(g.inputs["kmsKeyId"].startswith("arn:aws:kms:") for g in groups)
    assert one(run, "aws:eks/cluster:Cluster").inputs["encryptionConfig"]
    assert one(run, "aws:ecr/repository:Repository").inputs["encryptionConfigurations"]
    assert run.of_type("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_pod_identity_bindings(stack: str) -> None:
    run = cached_run(stack)
    assocs = run.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert {(a.inputs["namespace"], a.inputs["serviceAccount"]) for a in assocs} == {
        ("purchase-classifier", w) for w in IDENTITY_WORKLOADS
    } | {("kube-system", "karpenter")}
    trust = [
        json.loads(r.inputs["assumeRolePolicy"])
        for r in run.of_type("aws:iam/role:Role")
        if r.name.startswith("identities-")
    ]
    assert len(trust) == len(IDENTITY_WORKLOADS)
    assert all(t["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"} for t in trust)
    account = stack_account(load_stack_config(stack))
    assert all(t["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceAccount": account}} for t in trust)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_default_tags_on_every_aws_resource(stack: str) -> None:
    run = cached_run(stack)
    provider = one(run, "pulumi:providers:aws")
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    assert {k: tags[k] for k in ("project", "environment", "stack", "managed-by")} == {
        "project": PROJECT,
        "environment": stack,
        "stack": stack,
        "managed-by": "pulumi",
    }
    assert provider.inputs["region"] == "eu-west-1"
    for r in run.resources:
        if r.type.startswith("aws:"):
            assert r.provider_urn == provider.urn, f"{r.type} {r.name} bypasses the tagged provider"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_outputs_and_secret_kubeconfig(stack: str) -> None:
    run = cached_run(stack)
    assert {
        "clusterName",
        "clusterEndpoint",
        "kubeconfig",
        "registryUrl",
        "bucketName",
        "roleArns",
        "imageReference",
    } <= set(run.outputs)
    assert "kubeconfig" in run.secret_outputs
    assert set(run.outputs["roleArns"]) == set(IDENTITY_WORKLOADS)
    assert run.outputs["imageReference"] == f"{run.outputs['registryUrl']}@{DIGEST}"
    kubeconfig = json.loads(run.outputs["kubeconfig"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == run.outputs["clusterEndpoint"]
    provider = one(run, "pulumi:providers:kubernetes")
    assert provider.parent.endswith("purchase-classifier:aws:Cluster::cluster")


@pytest.mark.parametrize("stack", STACKS)
def test_fresh_stack_without_digest_warns_and_skips(stack: str) -> None:
    run = cached_run(stack, with_digest=False)
    assert "imageReference" not in run.outputs or run.outputs["imageReference"] is None
    assert any("imageDigest is not set" in w and "skipped" in w for w in run.warnings)
    # The platform's own cluster objects (Karpenter's and the Prometheus Operator stack's charts, pools
    # and namespace, the preview group's read access) exist; no workload does.
    platform = ("aws:Karpenter", "k8s:PrometheusStack", "k8s:PreviewAccess")
    workloads = [r for r in run.resources if r.type.startswith("kubernetes:") and not any(p in r.urn for p in platform)]
    assert workloads == []


def test_existing_cluster_declares_no_aws() -> None:
    run = cached_run("local")
    assert not [r for r in run.resources if r.type.startswith("aws:") or r.type == "pulumi:providers:aws"]
    assert not [r for r in run.resources if r.type in COMPONENTS]
    provider = one(run, "pulumi:providers:kubernetes")
    assert provider.inputs.get("context") == "kind-pc-local"
    assert run.outputs["registryUrl"] == "localhost:5001/purchase-classifier"
    assert run.outputs["imageReference"] == f"localhost:5001/purchase-classifier@{DIGEST}"
    assert run.outputs["bucketName"] == "purchase-classifier"
    assert run.outputs["roleArns"] == {}


def test_existing_cluster_kubeconfig_secret_is_kept_secret() -> None:
    run = run_stack("local", secrets={"databaseUrl": "sqlite:///x.db", "kubeconfig": "apiVersion: v1\nkind: Config\n"})
    assert "kubeconfig" in run.secret_outputs
