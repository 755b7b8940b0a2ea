"""The policy pack's rules as pure functions over (resource type, properties).

Why pure functions: CrossGuard only runs inside ``pulumi preview``/``up`` (a Pulumi CLI, a backend
and credentials), none of which a laptop or the test suite has. Keeping each rule a function that
takes the resource type token and its camelCase properties and returns violation messages lets the
tests run every rule against hand-written resources and against every resource the real program
registers under Pulumi's mocks (:mod:`infra.mockrun`), while :mod:`policy.pack` wraps the very same
functions into ``ResourceValidationPolicy``/``StackValidationPolicy`` objects for the CLI.

Properties arrive as plain dicts/lists in tests and as pulumi-policy's unknown-checking proxies
(``Mapping``/``Sequence``) under the CLI, so the code only uses the abstract collection types and
never catches broad exceptions: an ``UnknownValueError`` raised while reading a value that is not
known during preview must propagate, so pulumi-policy reports "can't run during preview" instead
of a rule passing or failing on a placeholder.

Type tokens were checked against what the program emits with pulumi-aws 7.x and
pulumi-kubernetes 4.x (``run_stack("dev")``); the pulumi-aws 6 ``*V2`` aliases are covered too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Props = Mapping[str, Any]
ResourceRule = Callable[[str, Props], list[str]]

# --- resource type tokens --------------------------------------------------------------------------

BUCKET_TYPES = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
BUCKET_SSE_TYPES = frozenset(
    {
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    }
)
BUCKET_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_ACL_TYPES = frozenset({"aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2"})
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ECR_REPOSITORY = "aws:ecr/repository:Repository"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
EKS_ADDON = "aws:eks/addon:Addon"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
KMS_KEY = "aws:kms/key:Key"
IAM_POLICY_TYPES = frozenset({"aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy"})
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
KARPENTER_NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
KARPENTER_NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SG_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
STATEFUL_TYPES = frozenset({EKS_CLUSTER, KMS_KEY, ECR_REPOSITORY, LOG_GROUP}) | BUCKET_TYPES
"""Resources whose loss loses data, access or an audit trail (the log groups): protected from deletion
in prod."""
PROTECTED_STACKS = frozenset({"prod"})

POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:core/v1:PodTemplate": ("template", "spec"),
    "kubernetes:core/v1:ReplicationController": ("spec", "template", "spec"),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
"""Where each workload kind keeps its PodSpec."""

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

# --- constants the rules enforce -------------------------------------------------------------------

DIGEST_IMAGE_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
SSE_ALGORITHMS = frozenset({"aws:kms", "aws:kms:dsse", "AES256"})
PUBLIC_CANNED_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
PUBLIC_GRANTEE_URIS = frozenset(
    {
        "http://acs.amazonaws.com/groups/global/AllUsers",
        "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
    }
)
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
REQUIRED_CONTROL_PLANE_LOGS = frozenset({"api", "audit", "authenticator"})
"""The minimum for an investigation: who called the API, what changed, who authenticated."""


# --- helpers ---------------------------------------------------------------------------------------


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _seq(value: Any) -> list[Any]:
    """``value`` as a list when it is a sequence (a proxy under the CLI), else empty."""
    return list(value) if _is_seq(value) else []


def _dig(props: Props, path: Sequence[str]) -> Any:
    node: Any = props
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def pod_spec(resource_type: str, props: Props) -> Mapping[str, Any] | None:
    """The PodSpec of a workload resource, ``None`` for anything else (or a spec-less resource)."""
    path = POD_TEMPLATE_PATHS.get(resource_type)
    if path is None:
        return None
    spec = _dig(props, path)
    return spec if isinstance(spec, Mapping) else None


def containers(resource_type: str, props: Props) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(label, container)`` for every container, init container and ephemeral container."""
    spec = pod_spec(resource_type, props)
    if spec is None:
        return
    for kind in CONTAINER_LISTS:
        items = spec.get(kind)
        if not _is_seq(items):
            continue
        for index, container in enumerate(list(items or ())):
            if isinstance(container, Mapping):
                name = container.get("name") or f"#{index}"
                yield f"{kind}[{name}]", container


def _workload_name(props: Props) -> str:
    name = _dig(props, ("metadata", "name"))
    return str(name) if name else "<unnamed>"


# --- Kubernetes workload rules ---------------------------------------------------------------------


def images_by_digest(resource_type: str, props: Props) -> list[str]:
    """Every container image is ``<repo>@sha256:<64 hex>``: a tag can move after staging tested it."""
    out = []
    for label, container in containers(resource_type, props):
        image = container.get("image")
        if not isinstance(image, str) or not DIGEST_IMAGE_RE.search(image):
            out.append(
                f"{_workload_name(props)} {label}: image {image!r} is not pinned by digest "
                "(want <registry>/<repo>@sha256:<64 hex>)"
            )
    return out


def containers_non_root(resource_type: str, props: Props) -> list[str]:
    """Containers must not run as root or be able to become root (pod- or container-level context)."""
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    pod_ctx = spec.get("securityContext") or {}
    out = []
    for label, container in containers(resource_type, props):
        ctx = container.get("securityContext") or {}
        where = f"{_workload_name(props)} {label}"
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if non_root is not True:
            out.append(f"{where}: securityContext.runAsNonRoot must be true")
        if user == 0:
            out.append(f"{where}: runAsUser is 0 (root)")
        if ctx.get("privileged") is True:
            out.append(f"{where}: privileged containers are forbidden")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
        drop = _dig(ctx, ("capabilities", "drop"))
        if "ALL" not in _seq(drop):
            out.append(f"{where}: securityContext.capabilities.drop must include ALL")
    return out


def containers_resource_limits(resource_type: str, props: Props) -> list[str]:
    """CPU and memory limits on every container, so one job cannot starve a node."""
    out = []
    for label, container in containers(resource_type, props):
        limits = _dig(container, ("resources", "limits"))
        missing = [k for k in ("cpu", "memory") if not isinstance(limits, Mapping) or not limits.get(k)]
        if missing:
            out.append(f"{_workload_name(props)} {label}: resources.limits missing {', '.join(missing)}")
    return out


def containers_read_only_root_fs(resource_type: str, props: Props) -> list[str]:
    """Read-only root filesystems: a compromised process cannot rewrite the image's code."""
    return [
        f"{_workload_name(props)} {label}: securityContext.readOnlyRootFilesystem must be true"
        for label, container in containers(resource_type, props)
        if _dig(container, ("securityContext", "readOnlyRootFilesystem")) is not True
    ]


# --- S3 rules --------------------------------------------------------------------------------------


def _sse_rules_ok(rules: Any) -> list[str]:
    if isinstance(rules, Mapping):  # inline Bucket form: {"rule": {...}}
        rules = [rules.get("rule")] if "rule" in rules else [rules]
    if not _is_seq(rules) or len(rules) == 0:
        return ["has no server-side encryption rule"]
    out = []
    for rule in rules:
        algorithm = _dig(rule, ("applyServerSideEncryptionByDefault", "sseAlgorithm"))
        if algorithm not in SSE_ALGORITHMS:
            out.append(f"sseAlgorithm {algorithm!r} is not one of {sorted(SSE_ALGORITHMS)}")
    return out


def bucket_encryption_valid(resource_type: str, props: Props) -> list[str]:
    """An encryption configuration (separate resource or inline) must name a real SSE algorithm."""
    if resource_type in BUCKET_SSE_TYPES:
        return [f"bucket encryption {msg}" for msg in _sse_rules_ok(props.get("rules"))]
    if resource_type in BUCKET_TYPES and props.get("serverSideEncryptionConfiguration") is not None:
        return [f"bucket {msg}" for msg in _sse_rules_ok(props.get("serverSideEncryptionConfiguration"))]
    return []


def _policy_document(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, str):
        try:
            doc = json.loads(value)
        except json.JSONDecodeError:
            return None
        return doc if isinstance(doc, Mapping) else None
    return None


def _principal_is_public(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        aws = principal.get("AWS")
        return aws == "*" or "*" in _seq(aws)
    return False


def bucket_not_public(resource_type: str, props: Props) -> list[str]:
    """No public ACL, no public-access switch off, no bucket policy allowing everyone."""
    out: list[str] = []
    if resource_type == BUCKET_PUBLIC_ACCESS_BLOCK:
        off = [flag for flag in PUBLIC_ACCESS_FLAGS if props.get(flag) is not True]
        if off:
            out.append(f"public access block must set {', '.join(off)} to true")
    if resource_type in BUCKET_TYPES | BUCKET_ACL_TYPES:
        acl = props.get("acl")
        if acl in PUBLIC_CANNED_ACLS:
            out.append(f"canned ACL {acl!r} makes the bucket public")
        grants = [*_seq(_dig(props, ("accessControlPolicy", "grants"))), *_seq(props.get("grants"))]
        for grant in grants:
            uri = _dig(grant, ("grantee", "uri")) if isinstance(grant, Mapping) else None
            uri = uri or (grant.get("uri") if isinstance(grant, Mapping) else None)
            if uri in PUBLIC_GRANTEE_URIS:
                out.append(f"ACL grant to {uri} makes the bucket public")
    if resource_type in BUCKET_TYPES or resource_type == BUCKET_POLICY:
        doc = _policy_document(props.get("policy"))
        statements = doc.get("Statement") if doc else None
        if isinstance(statements, Mapping):
            statements = [statements]
        for statement in _seq(statements):
            if (
                isinstance(statement, Mapping)
                and statement.get("Effect") == "Allow"
                and _principal_is_public(statement.get("Principal"))
            ):
                out.append(f"bucket policy statement {statement.get('Sid', '')!r} allows Principal '*'")
    return out


# --- ECR and EKS -----------------------------------------------------------------------------------


def ecr_immutable_and_scanned(resource_type: str, props: Props) -> list[str]:
    """Immutable tags (a tag never points at other bytes) and a vulnerability scan on every push."""
    if resource_type != ECR_REPOSITORY:
        return []
    out = []
    if props.get("imageTagMutability") != "IMMUTABLE":
        out.append(f"imageTagMutability is {props.get('imageTagMutability')!r}, must be 'IMMUTABLE'")
    if _dig(props, ("imageScanningConfiguration", "scanOnPush")) is not True:
        out.append("imageScanningConfiguration.scanOnPush must be true")
    return out


def eks_secrets_encrypted(resource_type: str, props: Props) -> list[str]:
    """Kubernetes Secrets envelope-encrypted with a KMS key."""
    if resource_type != EKS_CLUSTER:
        return []
    config = props.get("encryptionConfig")
    configs = [config] if isinstance(config, Mapping) else _seq(config)
    for item in configs:
        resources = item.get("resources") if isinstance(item, Mapping) else None
        if "secrets" in _seq(resources) and _dig(item, ("provider", "keyArn")):
            return []
    return ["encryptionConfig must encrypt 'secrets' with a KMS key (provider.keyArn)"]


def eks_control_plane_logs(resource_type: str, props: Props) -> list[str]:
    """Control-plane logs (at least api, audit, authenticator) shipped to CloudWatch."""
    if resource_type != EKS_CLUSTER:
        return []
    enabled = props.get("enabledClusterLogTypes")
    have = set(_seq(enabled))
    missing = sorted(REQUIRED_CONTROL_PLANE_LOGS - have)
    return [f"enabledClusterLogTypes is missing {', '.join(missing)}"] if missing else []


def iam_least_privilege(resource_type: str, props: Props) -> list[str]:
    """Identity policies grant no wildcard action, no NotAction/NotResource, and no write on ``*``
    (the check of :func:`infra.aws.policies.least_privilege_violations`)."""
    if resource_type not in IAM_POLICY_TYPES:
        return []
    from infra.aws.policies import least_privilege_violations

    doc = _policy_document(props.get("policy"))
    if doc is None:
        return ["policy is not a JSON policy document"]
    return least_privilege_violations(_plain(doc))


IAM_ROLE = "aws:iam/role:Role"


def iam_role_bounded(resource_type: str, props: Props) -> list[str]:
    """A role the stack creates lives under the workload path and carries the workload permissions
    boundary: the only roles ``ci-deployer`` may create (:func:`bootstrap.policies.deployer_iam_policy`),
    and the ceiling that keeps whatever is attached to them from reaching IAM or the CI roles."""
    if resource_type != IAM_ROLE:
        return []
    from infra.naming import WORKLOAD_BOUNDARY_NAME, WORKLOAD_ROLE_PATH

    problems = []
    if props.get("path") != WORKLOAD_ROLE_PATH:
        problems.append(f"path is {props.get('path')!r}; roles the stack creates live under {WORKLOAD_ROLE_PATH!r}")
    boundary = props.get("permissionsBoundary")
    expected = rf"arn:aws:iam::\d{{12}}:policy/{WORKLOAD_BOUNDARY_NAME}"
    if not isinstance(boundary, str) or not re.fullmatch(expected, boundary):
        problems.append(
            f"permissionsBoundary is {boundary!r}; it must be the account's policy/{WORKLOAD_BOUNDARY_NAME} "
            "(created by the bootstrap program)"
        )
    return problems


def _plain(value: Any) -> Any:
    """Proxies (under the CLI) as plain dicts and lists, for code that expects JSON data."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if _is_seq(value) else value


def network_policy_enforced(resource_type: str, props: Props) -> list[str]:
    """The VPC CNI addon enforces NetworkPolicies (``enableNetworkPolicy``); off, every policy is ignored."""
    if resource_type != EKS_ADDON or props.get("addonName") != "vpc-cni":
        return []
    values = _policy_document(props.get("configurationValues")) or {}
    if str(values.get("enableNetworkPolicy")).lower() != "true":
        return ['vpc-cni configurationValues must set enableNetworkPolicy to "true"']
    return []


def _imds_problems(options: Any) -> list[str]:
    if not isinstance(options, Mapping):
        return ["metadataOptions missing (default allows IMDSv1 or a hop limit of 2)"]
    out = []
    if options.get("httpTokens") != "required":
        out.append(f"metadataOptions.httpTokens is {options.get('httpTokens')!r}, must be 'required' (IMDSv2)")
    hops = options.get("httpPutResponseHopLimit")
    if hops != 1:
        out.append(f"metadataOptions.httpPutResponseHopLimit is {hops!r}, must be 1")
    return out


def nodes_imdsv2_hop_limit_1(resource_type: str, props: Props) -> list[str]:
    """Nodes answer only IMDSv2 and only one hop away: pods cannot read the node role's credentials."""
    if resource_type == LAUNCH_TEMPLATE:
        return _imds_problems(props.get("metadataOptions"))
    if resource_type == KARPENTER_NODE_CLASS:
        return _imds_problems(_dig(props, ("spec", "metadataOptions")))
    if resource_type == EKS_NODE_GROUP and not props.get("launchTemplate"):
        return ["node group has no launch template (EKS's default allows a metadata hop limit of 2)"]
    return []


def _encrypted(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def nodes_encrypted_root_volumes(resource_type: str, props: Props) -> list[str]:
    """Every node's root volume is an encrypted EBS volume, declared explicitly."""
    if resource_type == LAUNCH_TEMPLATE:
        mappings = _seq(props.get("blockDeviceMappings"))
    elif resource_type == KARPENTER_NODE_CLASS:
        mappings = _seq(_dig(props, ("spec", "blockDeviceMappings")))
    elif resource_type == EKS_NODE_GROUP and not props.get("launchTemplate"):
        return ["node group has no launch template declaring an encrypted root volume"]
    else:
        return []
    if not mappings:
        return ["no blockDeviceMappings: the root volume's encryption is left to the account default"]
    return [
        f"blockDeviceMappings[{i}] ({_dig(m, ('deviceName',))}): ebs.encrypted must be true"
        for i, m in enumerate(mappings)
        if not _encrypted(_dig(m, ("ebs", "encrypted")))
    ]


# --- stack-level rule: every bucket has its encryption and public-access-block companions ----------


@dataclass(frozen=True)
class StackResource:
    """The parts of a stack resource the stack rule needs (built from PolicyResource or a capture)."""

    type: str
    urn: str
    props: Props = field(default_factory=dict)
    dependencies: frozenset[str] = frozenset()
    """URNs this resource depends on (its ``bucket`` input references the bucket's id)."""
    protect: bool = False
    """The resource's ``protect`` option."""


def bucket_companions(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """``(bucket urn, message)`` for each bucket without encryption or a public access block.

    pulumi-aws 7 configures both on separate resources that reference the bucket; they are matched
    by dependency, because the bucket's id is unknown during a preview of a new stack. The bucket's
    own properties are read only when no companion exists (inline encryption, a legacy form).
    """
    items = list(resources)
    buckets = [r for r in items if r.type in BUCKET_TYPES]
    encrypted = {urn for r in items if r.type in BUCKET_SSE_TYPES for urn in r.dependencies}
    blocked = {urn for r in items if r.type == BUCKET_PUBLIC_ACCESS_BLOCK for urn in r.dependencies}
    out = []
    for bucket in buckets:
        if bucket.urn not in encrypted and bucket.props.get("serverSideEncryptionConfiguration") is None:
            out.append((bucket.urn, "bucket has no server-side encryption configuration"))
        if bucket.urn not in blocked:
            out.append((bucket.urn, "bucket has no BucketPublicAccessBlock"))
    return out


def _stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::...`` → ``<stack>``."""
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def autoscaler_present(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """An EKS cluster comes with Karpenter (its chart) and at least one NodePool: without a node
    autoscaler, pods beyond the system nodes stay Pending."""
    items = list(resources)
    clusters = [r for r in items if r.type == EKS_CLUSTER]
    charts = {str(r.props.get("chart", "")).rsplit("/", 1)[-1] for r in items if r.type == HELM_RELEASE}
    pools = [r for r in items if r.type == KARPENTER_NODE_POOL]
    out = []
    for cluster in clusters:
        if "karpenter" not in charts:
            out.append((cluster.urn, "no Karpenter Helm release: nothing scales the cluster's nodes"))
        if not pools:
            out.append((cluster.urn, "no Karpenter NodePool: Karpenter may launch no node"))
    return out


def private_api_reachable(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """An EKS cluster whose endpoint is private only comes with an ingress rule on 443 (on its security
    group, for the deployer's network): without one nothing outside the VPC's nodes can deploy to it."""
    items = list(resources)
    rules_443 = [
        r
        for r in items
        if r.type == SG_INGRESS_RULE
        and r.props.get("ipProtocol") in ("tcp", "-1")
        and int(r.props.get("fromPort", 0) or 0) <= 443 <= int(r.props.get("toPort", 65535) or 65535)
    ]
    return [
        (c.urn, "private API endpoint with no ingress rule on 443: set cluster.privateAccess for the deployer")
        for c in items
        if c.type == EKS_CLUSTER
        and (c.props.get("vpcConfig") or {}).get("endpointPublicAccess") is False
        and not rules_443
    ]


def metrics_server_present(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """An EKS cluster runs the metrics-server addon: without it no HorizontalPodAutoscaler acts."""
    items = list(resources)
    addons = {r.props.get("addonName") for r in items if r.type == EKS_ADDON}
    return [
        (r.urn, "no metrics-server addon: HorizontalPodAutoscalers get no metrics and never scale")
        for r in items
        if r.type == EKS_CLUSTER and "metrics-server" not in addons
    ]


def stateful_resources_protected(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """In prod, the cluster, KMS keys, buckets and registries are ``protect``ed: no update or
    destroy deletes them by accident."""
    return [
        (r.urn, f"{r.type} is stateful and must be protected in stack {_stack_of(r.urn)!r}")
        for r in resources
        if r.type in STATEFUL_TYPES and _stack_of(r.urn) in PROTECTED_STACKS and not r.protect
    ]


# --- the catalogue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    """One mandatory resource rule: policy name, description, and the pure function."""

    name: str
    description: str
    check: ResourceRule


RESOURCE_RULES: tuple[RuleSpec, ...] = (
    RuleSpec("images-by-digest", "Container images are referenced by @sha256 digest, never a tag.",
             images_by_digest),
    RuleSpec("containers-non-root", "Containers run as non-root, unprivileged, with capabilities dropped.",
             containers_non_root),
    RuleSpec("containers-resource-limits", "Every container sets CPU and memory limits.",
             containers_resource_limits),
    RuleSpec("containers-read-only-root-fs", "Every container has a read-only root filesystem.",
             containers_read_only_root_fs),
    RuleSpec("s3-encryption-valid", "S3 server-side encryption uses SSE-KMS, DSSE-KMS or AES256.",
             bucket_encryption_valid),
    RuleSpec("s3-never-public", "S3 buckets: all public-access blocks on, no public ACL or policy.",
             bucket_not_public),
    RuleSpec("ecr-immutable-scanned", "ECR repositories have immutable tags and scan on push.",
             ecr_immutable_and_scanned),
    RuleSpec("eks-secrets-encrypted", "EKS encrypts Kubernetes secrets with a KMS key.",
             eks_secrets_encrypted),
    RuleSpec("eks-control-plane-logs", "EKS ships api, audit and authenticator logs.",
             eks_control_plane_logs),
    RuleSpec("iam-least-privilege", "IAM policies: no wildcard actions, no writes on resource '*'.",
             iam_least_privilege),
    RuleSpec("iam-role-bounded",
             "IAM roles live under the workload path with the workload permissions boundary.",
             iam_role_bounded),
    RuleSpec("network-policy-enforced", "The VPC CNI addon enforces NetworkPolicies.",
             network_policy_enforced),
    RuleSpec("nodes-imdsv2-hop-limit-1", "Nodes require IMDSv2 with a hop limit of 1.",
             nodes_imdsv2_hop_limit_1),
    RuleSpec("nodes-encrypted-root-volumes", "Nodes' root volumes are encrypted EBS volumes.",
             nodes_encrypted_root_volumes),
)  # fmt: skip
STACK_RULE_NAME = "s3-bucket-encrypted-and-blocked"
STACK_RULE_DESCRIPTION = "Every S3 bucket has a server-side encryption configuration and a public access block."

StackRule = Callable[[Iterable[StackResource]], list[tuple[str, str]]]


@dataclass(frozen=True)
class StackRuleSpec:
    """One mandatory stack rule: it sees every resource at once."""

    name: str
    description: str
    check: StackRule


STACK_RULES: tuple[StackRuleSpec, ...] = (
    StackRuleSpec(STACK_RULE_NAME, STACK_RULE_DESCRIPTION, bucket_companions),
    StackRuleSpec("eks-node-autoscaler", "An EKS cluster runs Karpenter with at least one NodePool.",
                  autoscaler_present),
    StackRuleSpec("eks-metrics-server", "An EKS cluster runs the metrics-server addon.", metrics_server_present),
    StackRuleSpec("eks-private-api-reachable",
                  "An EKS cluster with a private-only endpoint admits the deployer on 443.",
                  private_api_reachable),
    StackRuleSpec("prod-stateful-protected",
                  "In prod, the cluster, KMS keys, buckets, registries and log groups are protected.",
                  stateful_resources_protected),
)  # fmt: skip


def check_resource(resource_type: str, props: Props) -> dict[str, list[str]]:
    """Run every resource rule; ``{rule name: violations}`` for the rules that found any."""
    found = {}
    for rule in RESOURCE_RULES:
        messages = rule.check(resource_type, props)
        if messages:
            found[rule.name] = messages
    return found
