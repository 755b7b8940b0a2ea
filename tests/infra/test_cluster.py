"""The EKS cluster as every stack declares it, under Pulumi mocks: node autoscaling with Karpenter,
addons pinned per cluster version, NetworkPolicy enforcement, access entries, upgrade policy,
protection of stateful resources, flow logs and encrypted log groups, the registry's lifecycle, and
the workload settings that depend on the cluster (CronJob failure policy, serving preStop, Pod
Security version, database egress).

Karpenter's custom resources are validated against Karpenter's own CRD schemas (vendored from the
Karpenter Go module, see ``tests/infra/crds/README.md``), as the API server does on create: the
structural schema, pruning-strict (a field the API server would drop is an error here), and every
``x-kubernetes-validations`` CEL rule, evaluated with a real CEL interpreter plus the two Kubernetes
CEL library functions the rules use (``find``, ``split``). Transition rules (``oldSelf``) apply only
to updates and are not evaluated.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import cel
import jsonschema
import pulumi
import pytest
import yaml

from infra.aws import karpenter
from infra.aws.policies import least_privilege_violations
from infra.checks.capacity import VM_MEMORY_OVERHEAD
from infra.k8s import dask
from infra.mockrun import CapturedResource, StackRun, load_stack_config
from infra.naming import DISCOVERY_TAG
from infra.schema import SUPPORTED_CLUSTER_VERSIONS
from ml.errors import ExitCode
from tests.infra.harness import AWS_STACKS, DIGEST, STACKS, cached_run, run_stack

CRD_DIR = Path(__file__).parent / "crds" / f"karpenter-v{karpenter.KARPENTER_VERSION}"
NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RELEASE = "kubernetes:helm.sh/v3:Release"
ADDON = "aws:eks/addon:Addon"
STATEFUL = (
    "aws:eks/cluster:Cluster",
    "aws:kms/key:Key",
    "aws:s3/bucket:Bucket",
    "aws:ecr/repository:Repository",
    "aws:cloudwatch/logGroup:LogGroup",  # control-plane and flow logs
)


def one(run: StackRun, type_: str, name: str | None = None) -> CapturedResource:
    found = [r for r in run.of_type(type_) if name is None or r.name == name]
    assert len(found) == 1, f"{type_} {name}: {len(found)} found"
    return found[0]


def account(run: StackRun) -> str:
    """The account the stack deploys into (its ``aws:allowedAccountIds``, which the mocks use)."""
    return str(json.loads(run.config["aws:allowedAccountIds"])[0])


def stack_cfg(stack: str) -> dict[str, Any]:
    return load_stack_config(stack)["purchase-classifier:cluster"]


# ------------------------------------------------------------------ Karpenter CRD schemas


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural schema as the API server prunes: an object with declared ``properties`` and no
    ``additionalProperties``/``x-kubernetes-preserve-unknown-fields`` accepts no other field."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        schema["items"] = _strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _strict(schema["additionalProperties"])
    return schema


@cache
def crd_openapi_schema(kind: str) -> dict[str, Any]:
    """The v1 ``openAPIV3Schema`` of Karpenter's CRD for ``kind``, as vendored."""
    for path in CRD_DIR.glob("karpenter.*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind} in {CRD_DIR}")


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    schema = copy.deepcopy(crd_openapi_schema(kind))
    # metadata is validated by the API server itself, not by the CRD's schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return _strict(schema)


def _cel_find(text: str, pattern: str) -> str:
    """Kubernetes CEL regex library: the first match of ``pattern`` in ``text``, or ``""``."""
    match = re.search(pattern, text)
    return match.group(0) if match else ""


def cel_violations(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Every ``x-kubernetes-validations`` rule under ``schema`` that ``value`` breaks."""
    out = []
    for validation in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in validation["rule"]:  # a transition rule: only on update
            continue
        context = cel.Context()
        context.add_function("find", _cel_find)
        context.add_function("split", lambda text, sep: text.split(sep))
        context.add_variable("self", value)
        if cel.evaluate(validation["rule"], context) is not True:
            out.append(f"{path}: {validation.get('message', validation['rule'])}")
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                out += cel_violations(value[key], sub, f"{path}.{key}")
        if isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                out += cel_violations(item, schema["additionalProperties"], f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += cel_violations(item, schema["items"], f"{path}[{i}]")
    return out


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """Raise on anything the API server would reject when creating ``obj``."""
    assert obj["apiVersion"] in (karpenter.NODE_POOL_API, karpenter.NODE_CLASS_API)
    jsonschema.validate(obj, crd_schema(obj["kind"]), cls=jsonschema.Draft7Validator)
    broken = cel_violations(obj, crd_openapi_schema(obj["kind"]), f"{obj['kind']}/{obj['metadata']['name']}")
    if broken:
        raise AssertionError("; ".join(broken))


def karpenter_objects(run: StackRun) -> list[dict[str, Any]]:
    return [r.inputs for r in run.resources if r.type in (NODE_POOL, NODE_CLASS)]


def test_vendored_crds_are_karpenters_for_the_pinned_version() -> None:
    names = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert names == ["chart-values.yaml", "karpenter.k8s.aws_ec2nodeclasses.yaml", "karpenter.sh_nodepools.yaml"]
    source = (CRD_DIR.parent / "README.md").read_text()
    assert f"v{karpenter.KARPENTER_VERSION}" in source and "github.com/aws/karpenter-provider-aws" in source


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_karpenter_resources_validate_against_karpenters_crds(stack: str) -> None:
    objects = karpenter_objects(cached_run(stack))
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("EC2NodeClass", "dask"),
        ("EC2NodeClass", "general"),
        ("NodePool", "dask"),
        ("NodePool", "general"),
    ]
    for obj in objects:
        validate_custom_resource(obj)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("NodePool", ("spec", "disruption", "consolidationPolicy"), "Sometimes"),
        ("NodePool", ("spec", "template", "spec", "nodeClassRefs"), {"name": "dask"}),  # unknown field
        ("NodePool", ("spec", "template", "spec", "requirements", 0, "operator"), "Within"),
        ("EC2NodeClass", ("spec", "metadataOptions", "httpTokens"), "maybe"),
        ("EC2NodeClass", ("spec", "metadataOptions", "httpPutResponseHopLimit"), 100),
        ("EC2NodeClass", ("spec", "blockDeviceMappings", 0, "ebs", "volumeType"), "floppy"),
    ],
)
def test_crd_validation_rejects_what_the_api_server_would(kind: str, path: tuple[Any, ...], value: Any) -> None:
    obj = copy.deepcopy(next(o for o in karpenter_objects(cached_run("dev")) if o["kind"] == kind))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(obj)


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("NodePool", ("spec", "template", "spec", "requirements", 0, "values"), [],
         "requirements with operator 'In' must have a value defined"),
        ("NodePool", ("spec", "template", "spec", "requirements", 0, "key"), "karpenter.sh/nodepool",
         "label \"karpenter.sh/nodepool\" is restricted"),
        ("EC2NodeClass", ("spec", "instanceProfile"), "profile",
         "must specify exactly one of ['role', 'instanceProfile']"),
        ("EC2NodeClass", ("spec", "amiSelectorTerms", 0, "id"), "ami-0123", "'alias' is mutually exclusive"),
    ],
)  # fmt: skip
def test_crd_validation_runs_the_crds_cel_rules(kind: str, path: tuple[Any, ...], value: Any, message: str) -> None:
    obj = copy.deepcopy(next(o for o in karpenter_objects(cached_run("dev")) if o["kind"] == kind))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    jsonschema.validate(obj, crd_schema(kind), cls=jsonschema.Draft7Validator)  # the structure is fine
    with pytest.raises(AssertionError, match=re.escape(message)):
        validate_custom_resource(obj)


# ------------------------------------------------------------------ Karpenter on AWS and in the cluster


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_karpenter_charts_are_pinned_and_configured(stack: str) -> None:
    run = cached_run(stack)
    crds = one(run, RELEASE, "karpenter-crd")
    controller = one(run, RELEASE, "karpenter")
    for release, chart in ((crds, "karpenter-crd"), (controller, "karpenter")):
        assert release.inputs["chart"] == f"{karpenter.CHART_REPOSITORY}/{chart}"
        assert release.inputs["version"] == karpenter.KARPENTER_VERSION
        assert release.inputs["namespace"] == "kube-system"
    assert controller.inputs["skipCrds"] is True and crds.urn in controller.dependencies
    values = controller.inputs["values"]
    queue = one(run, "aws:sqs/queue:Queue")
    assert values["settings"] == {"clusterName": stack_cfg(stack)["name"], "interruptionQueue": queue.name}
    assert values["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"}]
    # The chart keeps replicas on different nodes: never more than the system group's minimum.
    assert values["replicas"] == min(2, stack_cfg(stack)["systemNodes"]["minSize"])


def _unknown_keys(ours: dict[str, Any], chart: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys of ``ours`` the chart's values.yaml does not have (a typo there is silently ignored)."""
    out = []
    for key, value in ours.items():
        if key not in chart:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(chart[key], dict) and chart[key]:
            out += _unknown_keys(value, chart[key], f"{prefix}{key}.")
    return out


def test_helm_values_are_values_the_chart_reads() -> None:
    chart = yaml.safe_load((CRD_DIR / "chart-values.yaml").read_text())
    ours = karpenter.helm_values("pc-dev", "queue", 2)
    assert _unknown_keys(ours, chart) == []
    assert _unknown_keys({"settings": {"clusterNmae": "x"}}, chart) == ["settings.clusterNmae"]
    # The capacity check's hypervisor overhead is the controller's own default.
    assert float(chart["settings"]["vmMemoryOverheadPercent"]) == VM_MEMORY_OVERHEAD


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_interruption_queue_receives_the_four_event_kinds(stack: str) -> None:
    run = cached_run(stack)
    rules = {
        json.loads(r.inputs["eventPattern"])["detail-type"][0]
        for r in run.of_type("aws:cloudwatch/eventRule:EventRule")
    }
    assert rules == {
        "AWS Health Event",
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
    }
    queue = one(run, "aws:sqs/queue:Queue")
    assert queue.inputs["sqsManagedSseEnabled"] is True
    targets = run.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == 4 and all(queue.urn in t.dependencies for t in targets)
    policy = json.loads(one(run, "aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])
    (send,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert "events.amazonaws.com" in send["Principal"]["Service"] and send["Action"] == "sqs:SendMessage"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_karpenter_identity_node_role_and_access_entry(stack: str) -> None:
    run = cached_run(stack)
    assoc = one(run, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "karpenter-controller")
    assert (assoc.inputs["namespace"], assoc.inputs["serviceAccount"]) == ("kube-system", "karpenter")
    policy = json.loads(one(run, "aws:iam/rolePolicy:RolePolicy", "karpenter-controller").inputs["policy"])
    assert least_privilege_violations(policy) == []
    (pass_role,) = [s for s in policy["Statement"] if s["Action"] == ["iam:PassRole"]]
    node_role = one(run, "aws:iam/role:Role", "karpenter-node")
    assert pass_role["Resource"] == [f"arn:aws:iam::{account(run)}:role/karpenter-node"]
    assert json.loads(node_role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    (entry,) = [e for e in run.of_type("aws:eks/accessEntry:AccessEntry") if e.inputs["type"] == "EC2_LINUX"]
    assert node_role.urn in entry.dependencies
    # Karpenter finds subnets and the cluster security group by the discovery tag.
    private = [s for s in run.of_type("aws:ec2/subnet:Subnet") if s.name.startswith("network-private-")]
    assert private and all(s.inputs["tags"][DISCOVERY_TAG] == stack_cfg(stack)["name"] for s in private)
    tag = one(run, "aws:ec2/tag:Tag")
    assert (tag.inputs["key"], tag.inputs["value"]) == (DISCOVERY_TAG, stack_cfg(stack)["name"])


def pools(run: StackRun) -> dict[str, dict[str, Any]]:
    return {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in run.of_type(NODE_POOL)}


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_node_pools_diversified_tainted_consolidating_and_bounded(stack: str) -> None:
    cfg = stack_cfg(stack)["nodePools"]
    found = pools(cached_run(stack))
    for name in ("dask", "general"):
        spec = found[name]
        reqs = {r["key"]: r for r in spec["template"]["spec"]["requirements"]}
        assert reqs["karpenter.sh/capacity-type"]["values"] == cfg[name]["capacityTypes"]
        assert reqs["karpenter.k8s.aws/instance-category"]["values"] == cfg[name]["instanceCategories"]
        sizes = [int(v) for v in reqs["karpenter.k8s.aws/instance-cpu"]["values"]]
        assert (
            len(sizes) >= 2 and cfg[name]["minInstanceCpu"] <= min(sizes) <= max(sizes) == cfg[name]["maxInstanceCpu"]
        )
        assert spec["limits"] == cfg[name]["limits"]
        assert spec["template"]["metadata"]["labels"] == {"purchase-classifier/pool": name}
        assert spec["template"]["spec"]["nodeClassRef"] == {
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "name": name,
        }
        assert "replicas" not in spec  # no floor: with no pod asking, a pool has no node
    # Dask: tainted for the workers alone; never evicts a worker to save cost (only empty nodes go).
    assert found["dask"]["template"]["spec"]["taints"] == [
        {"key": "purchase-classifier/dask", "value": "true", "effect": "NoSchedule"}
    ]
    assert found["dask"]["disruption"]["consolidationPolicy"] == "WhenEmpty"
    assert found["general"]["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert "taints" not in found["general"]["template"]["spec"]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_node_classes_al2023_imdsv2_hop_1_encrypted_gp3(stack: str) -> None:
    cfg = stack_cfg(stack)["nodePools"]
    for r in cached_run(stack).of_type(NODE_CLASS):
        spec, name = r.inputs["spec"], r.inputs["metadata"]["name"]
        assert spec["amiSelectorTerms"] == [{"alias": f"al2023@{stack_cfg(stack).get('nodeAmiRelease', 'latest')}"}]
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        (root,) = spec["blockDeviceMappings"]
        assert root["ebs"] == {
            "volumeSize": f"{cfg[name]['diskSizeGb']}Gi",
            "volumeType": "gp3",
            "encrypted": True,
            "deleteOnTermination": True,
        }
        assert spec["role"] == "karpenter-node"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_dask_workers_land_on_the_dask_pool(stack: str) -> None:
    run = cached_run(stack)
    (workers,) = [
        d for d in run.of_type("kubernetes:apps/v1:Deployment") if d.inputs["metadata"]["name"] == "dask-worker"
    ]
    pod = workers.inputs["spec"]["template"]["spec"]
    dask_pool = pools(run)["dask"]["template"]
    assert pod["nodeSelector"].items() <= dask_pool["metadata"]["labels"].items()
    (taint,) = dask_pool["spec"]["taints"]
    assert {"key": taint["key"], "value": taint["value"], "effect": taint["effect"], "operator": "Equal"} in pod[
        "tolerations"
    ]


# ------------------------------------------------------------------ control plane, addons, access


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_cluster_version_supported_upgrade_policy_and_no_creator_admin(stack: str) -> None:
    cluster = one(cached_run(stack), "aws:eks/cluster:Cluster")
    assert cluster.inputs["version"] in SUPPORTED_CLUSTER_VERSIONS
    assert cluster.inputs["upgradePolicy"] == {"supportType": "STANDARD"}
    assert cluster.inputs["accessConfig"] == {
        "authenticationMode": "API",
        "bootstrapClusterCreatorAdminPermissions": False,
    }


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_addons_pinned_to_the_cluster_versions_row(stack: str) -> None:
    run = cached_run(stack)
    pinned = SUPPORTED_CLUSTER_VERSIONS[stack_cfg(stack)["version"]]
    addons = {a.inputs["addonName"]: a for a in run.of_type(ADDON)}
    assert {n: a.inputs["addonVersion"] for n, a in addons.items()} == {n: pinned.for_addon(n) for n in addons}
    assert json.loads(addons["vpc-cni"].inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
    # metrics-server does not tolerate the system taint: it waits for Karpenter's pools.
    pool_urns = {r.urn for r in run.of_type(NODE_POOL)}
    assert pool_urns <= set(addons["metrics-server"].dependencies)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_admin_is_an_explicit_access_entry(stack: str) -> None:
    run = cached_run(stack)
    entries = sorted(
        e.inputs["principalArn"]
        for e in run.of_type("aws:eks/accessEntry:AccessEntry")
        if e.inputs["type"] == "STANDARD"
    )
    # Admins and the read-only viewers (the CI preview role), one entry each.
    assert entries == sorted(stack_cfg(stack)["adminRoleArns"] + stack_cfg(stack).get("viewerRoleArns", []))


@pytest.mark.parametrize(("stack", "release"), [("dev", "latest"), ("staging", "v20261015"), ("prod", "v20261015")])
def test_staging_and_prod_pin_the_nodes_ami_release_dev_floats(stack: str, release: str) -> None:
    for r in cached_run(stack).of_type(NODE_CLASS):
        assert r.inputs["spec"]["amiSelectorTerms"] == [{"alias": f"al2023@{release}"}]


ENTRY = "aws:eks/accessEntry:AccessEntry"
ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"


def _access(run: StackRun) -> dict[str, tuple[str, str]]:
    """URN -> (principal, policy or entry type) of every access entry and policy association."""
    return {
        r.urn: (r.inputs["principalArn"], r.inputs.get("policyArn") or r.inputs["type"])
        for r in run.resources
        if r.type in (ENTRY, ASSOCIATION)
    }


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_reordering_admin_roles_plans_no_change(stack: str) -> None:
    """Entries and associations are named by principal: the reversed list declares the same URNs with
    the same inputs, so a preview shows nothing to replace (no window without admin access)."""
    cfg = copy.deepcopy(stack_cfg(stack))
    assert len(cfg["adminRoleArns"]) >= 2
    cfg["adminRoleArns"].reverse()
    reordered = run_stack(stack, overrides={"cluster": cfg})
    before = _access(cached_run(stack))
    assert _access(reordered) == before
    # ... and the names say whose they are (not a position in a list).
    for urn, (principal, _) in before.items():
        if principal in cfg["adminRoleArns"]:
            assert urn.endswith(f"cluster-admin-{principal.split(':')[4]}-{principal.split('/', 1)[1]}")


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_policy_associations_follow_their_entries_and_the_provider_follows_both(stack: str) -> None:
    run = cached_run(stack)
    entries = {(e.inputs["principalArn"]): e.urn for e in run.of_type(ENTRY)}
    associations = run.of_type(ASSOCIATION)
    assert associations
    for a in associations:
        assert entries[a.inputs["principalArn"]] in a.dependencies
    (provider,) = [r for r in run.of_type("pulumi:providers:kubernetes") if r.name == "cluster-k8s"]
    admins = {a.urn for a in associations if a.inputs["policyArn"].endswith("AmazonEKSClusterAdminPolicy")}
    assert admins and admins <= set(provider.dependencies)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_private_endpoint_admits_the_configured_deployer_network_on_443(stack: str) -> None:
    run = cached_run(stack)
    cluster = one(run, "aws:eks/cluster:Cluster")
    assert cluster.inputs["vpcConfig"]["endpointPublicAccess"] is False
    rules = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    access = stack_cfg(stack)["privateAccess"]
    assert sorted(r.inputs.get("cidrIpv4") or r.inputs["referencedSecurityGroupId"] for r in rules) == sorted(
        access.get("cidrs", []) + access.get("securityGroupIds", [])
    )
    for r in rules:
        # On the group EKS puts on the endpoint's network interfaces: the mock names it sg-<cluster>.
        assert r.inputs["securityGroupId"] == f"sg-{cluster.name}"
        assert (r.inputs["ipProtocol"], r.inputs["fromPort"], r.inputs["toPort"]) == ("tcp", 443, 443)


def test_a_runner_security_group_gets_its_own_rule() -> None:
    cfg = copy.deepcopy(stack_cfg("staging"))
    cfg["privateAccess"] = {"securityGroupIds": ["sg-0123456789abcdef0"]}
    run = run_stack("staging", overrides={"cluster": cfg})
    (rule,) = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.inputs["referencedSecurityGroupId"] == "sg-0123456789abcdef0"
    assert "cidrIpv4" not in rule.inputs
    assert rule.name == "cluster-api-from-sg-0123456789abcdef0"


# ------------------------------------------------------------------ protection, force-destroy, logs


@pytest.mark.parametrize(("stack", "guarded"), [("dev", False), ("staging", True), ("prod", True)])
def test_stateful_resources_protected_as_the_stack_says(stack: str, guarded: bool) -> None:
    run = cached_run(stack)
    stateful = [r for r in run.resources if r.type in STATEFUL]
    assert {r.type for r in stateful} == set(STATEFUL)
    for r in stateful:
        assert (r.options["protect"], r.options["retainOnDelete"]) == (guarded, guarded), r.name
    # Nothing else is protected: a replaced subnet or role must not block an update.
    assert not any(r.options["protect"] for r in run.resources if r.type not in STATEFUL)


def test_protection_is_switchable_in_config() -> None:
    run = run_stack("dev", overrides={"protection": {"protect": True, "retainOnDelete": False}})
    for r in run.resources:
        if r.type in STATEFUL:
            assert (r.options["protect"], r.options["retainOnDelete"]) == (True, False)


@pytest.mark.parametrize(("stack", "force"), [("dev", True), ("staging", False), ("prod", False)])
def test_force_destroy_only_where_the_stack_says(stack: str, force: bool) -> None:
    run = cached_run(stack)
    assert one(run, "aws:s3/bucket:Bucket").inputs["forceDestroy"] is force
    assert one(run, "aws:ecr/repository:Repository").inputs["forceDelete"] is force


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_vpc_flow_logs_into_an_encrypted_log_group(stack: str) -> None:
    run = cached_run(stack)
    flow = one(run, "aws:ec2/flowLog:FlowLog")
    assert flow.inputs["trafficType"] == "ALL" and flow.inputs["logDestinationType"] == "cloud-watch-logs"
    assert one(run, "aws:ec2/vpc:Vpc").urn in flow.dependencies
    group = one(run, "aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    assert group.urn in flow.dependencies
    for g in run.of_type("aws:cloudwatch/logGroup:LogGroup"):
        key = one(run, "aws:kms/key:Key", f"{g.name}-key")
        assert (
            key.urn in g.dependencies and g.inputs["kmsKeyId"] == f"arn:aws:kms:eu-west-1:{account(run)}:key/{key.name}"
        )
        statements = json.loads(key.inputs["policy"])["Statement"]
        assert any(s["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"} for s in statements)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_registry_keeps_the_newest_tagged_images(stack: str) -> None:
    policy = json.loads(one(cached_run(stack), "aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    tagged = [r for r in policy["rules"] if r["selection"].get("tagPatternList") == ["*"]]
    assert len(tagged) == 1 and tagged[0]["selection"]["countType"] == "imageCountMoreThan"
    assert tagged[0]["selection"]["countNumber"] >= 10


# ------------------------------------------------------------------ workloads that depend on the cluster


def k8s(run: StackRun, kind: str) -> dict[str, dict[str, Any]]:
    return {
        r.inputs["metadata"]["name"]: r.inputs
        for r in run.resources
        if r.type.endswith(f":{kind}") and r.type.startswith("kubernetes:")
    }


@pytest.mark.parametrize("stack", STACKS)
def test_cronjobs_fail_at_once_on_non_retriable_exit_codes(stack: str) -> None:
    for name, cron in k8s(cached_run(stack), "CronJob").items():
        job = cron["spec"]["jobTemplate"]["spec"]
        rules = job["podFailurePolicy"]["rules"]
        fail = next(r for r in rules if r["action"] == "FailJob")
        assert fail["onExitCodes"] == {"containerName": name, "operator": "In", "values": [2, 3, 5]}
        assert [ExitCode(c).name for c in fail["onExitCodes"]["values"]] == ["BAD_INPUT", "GATE_REJECTED", "NOT_FOUND"]
        count = next(r for r in rules if r["action"] == "Count")
        assert count["onExitCodes"]["values"] == [int(ExitCode.INFRASTRUCTURE)]
        assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
        assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
        # Karpenter never consolidates a node from under a running job.
        assert job["template"]["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}


@pytest.mark.parametrize("stack", STACKS)
def test_dask_workers_are_fixed_and_retire_through_the_scheduler(stack: str) -> None:
    run = cached_run(stack)
    workers = k8s(run, "Deployment")["dask-worker"]
    replicas = load_stack_config(stack)["purchase-classifier:workloads"]["dask"]["workers"]["replicas"]
    assert workers["spec"]["replicas"] == replicas
    pod = workers["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:3] == ["python", "-c", dask.RETIRE_SCRIPT] and "retire_workers" in command[2]
    assert pod["terminationGracePeriodSeconds"] >= 120
    targets = [h["spec"]["scaleTargetRef"]["name"] for h in k8s(run, "HorizontalPodAutoscaler").values()]
    assert "dask-worker" not in targets


@pytest.mark.parametrize("stack", STACKS)
def test_serving_drains_before_it_stops(stack: str) -> None:
    pod = k8s(cached_run(stack), "Deployment")["serving"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    sleep = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 5 <= sleep < pod.get("terminationGracePeriodSeconds", 30)


@pytest.mark.parametrize("stack", STACKS)
def test_pod_security_pinned_to_the_cluster_version(stack: str) -> None:
    namespaces = k8s(cached_run(stack), "Namespace").values()  # the workloads' and (eks) the monitoring one
    version = load_stack_config(stack)["purchase-classifier:cluster"].get("version", "1.35")
    assert namespaces
    for ns in namespaces:
        for mode in ("enforce", "audit", "warn"):
            assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}-version"] == f"v{version}"


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_jobs_get_egress_to_the_database(stack: str) -> None:
    policies = k8s(cached_run(stack), "NetworkPolicy")
    db_port = 5432  # the mock database URL is PostgreSQL
    reaching = set()
    for policy in policies.values():
        spec = policy["spec"]
        if any(p.get("port") == db_port for rule in spec.get("egress", []) for p in rule.get("ports", [])):
            selector = spec["podSelector"].get("matchExpressions", [{}])[0].get("values", ["<all pods>"])
            reaching.update(selector)
    assert reaching == {"refresh", "train", "predict"}


def test_the_program_refuses_a_stack_whose_pods_cannot_fit_before_any_resource() -> None:
    cluster = copy.deepcopy(load_stack_config("dev")["purchase-classifier:cluster"])
    cluster["nodePools"]["dask"]["maxInstanceCpu"] = 2  # the sizing dev had: 2-vCPU Dask nodes, one of them
    cluster["nodePools"]["dask"]["limits"] = {"cpu": "2", "memory": "16Gi"}
    with pytest.raises(pulumi.RunError) as info:
        run_stack("dev", overrides={"cluster": cluster})
    message = str(info.value)
    assert "purchase-classifier:cluster.nodePools.dask.limits: at maximum scale its pods need 2 node(s)" in message
    assert "purchase-classifier:workloads.dask.workers.replicas" in message


# ------------------------------------------------------------------ upgrades


def _closure(run: StackRun, urn: str) -> set[str]:
    """Every resource ``urn`` waits for: its dependencies and provider, transitively."""
    by_urn = run.by_urn()
    seen: set[str] = set()
    todo = [urn]
    while todo:
        r = by_urn.get(todo.pop())
        if r is None:
            continue
        for dep in [*r.dependencies, r.provider_urn]:
            if dep and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


UNKNOWN = "<unknown>"


def _same(a: Any, b: Any) -> bool:
    """Equal, a value still unknown on either side matching anything: whether an output is resolved
    when a dependent registers depends on the mock run's timing (a loaded machine showed it)."""
    if UNKNOWN in (a, b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_a_version_bump_upgrades_control_plane_then_addons_and_nodes_then_karpenters_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bump ``cluster.version`` on staging (with a made-up next row of addon versions) and compare the
    captured graphs: what changes, and in which order ``pulumi up`` must apply it (an update waits for
    the updates of everything it depends on)."""
    current = stack_cfg("staging")["version"]
    following = f"1.{int(current.split('.')[1]) + 1}"
    row = SUPPORTED_CLUSTER_VERSIONS[current].model_dump()
    monkeypatch.setitem(
        SUPPORTED_CLUSTER_VERSIONS,
        following,
        type(SUPPORTED_CLUSTER_VERSIONS[current])(
            **{k: v.replace("-eksbuild.", "9-eksbuild.") for k, v in row.items()}
        ),
    )
    cfg = copy.deepcopy(stack_cfg("staging"))
    cfg["version"] = following
    # Both runs here, one after the other: a cached run made earlier in the suite has differed from a
    # fresh one in an unrelated resource (the interruption queue's policy) in full-suite runs only.
    before = run_stack("staging", overrides={"imageDigest": DIGEST})
    after = run_stack("staging", overrides={"cluster": cfg, "imageDigest": DIGEST})

    def plain(inputs: dict[str, Any]) -> Any:
        return json.loads(json.dumps(inputs, sort_keys=True, default=lambda _: UNKNOWN))

    old = {r.urn: plain(r.inputs) for r in before.resources}
    changed = {r.urn: r for r in after.resources if not _same(old.get(r.urn), plain(r.inputs))}
    assert {r.urn for r in after.resources} == set(old)  # nothing created or deleted: updates only
    kinds = sorted({r.type for r in changed.values()})
    assert kinds == [
        "aws:eks/addon:Addon",
        "aws:eks/cluster:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "kubernetes:core/v1:Namespace",  # Pod Security pinned to the new version
    ], {u: (old.get(u), plain(r.inputs)) for u, r in changed.items() if not u.endswith(("Cluster", "Addon"))}
    (control_plane,) = [u for u, r in changed.items() if r.type == "aws:eks/cluster:Cluster"]
    # 1. The control plane first: it waits for no other change.
    assert not _closure(after, control_plane) & set(changed)
    # 2. Then every addon and the system node group (its `version` is the control plane's).
    second = [u for u, r in changed.items() if r.type in ("aws:eks/addon:Addon", "aws:eks/nodeGroup:NodeGroup")]
    assert len(second) == 7
    for urn in second:
        assert control_plane in _closure(after, urn)
    (group,) = after.of_type("aws:eks/nodeGroup:NodeGroup")
    assert group.inputs["version"] == following
    # 3. Karpenter's nodes: its NodePools and EC2NodeClasses wait for the node group and the addons
    # the nodes need; Karpenter then drifts every node it launched to the new version's AMI.
    base_addons = {u for u in second if changed[u].inputs.get("addonName") in ("vpc-cni", "kube-proxy")}
    for r in [*after.of_type(NODE_POOL), *after.of_type(NODE_CLASS)]:
        waits_for = _closure(after, r.urn)
        assert group.urn in waits_for and base_addons <= waits_for
