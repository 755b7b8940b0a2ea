"""``python -m infra render``: what a stack would apply, written out offline for review and scanning.

The program runs under Pulumi's mocks (:mod:`infra.mockrun`), with no CLI, state or cloud
credentials, and every Kubernetes object it declares is written as YAML, one file per object, plus a
readable summary of the AWS resources and their key settings, and (eks mode) of each node pool's
requested CPU and memory at minimum and maximum scale against what the pool may provide. This is an
aid for reviewing a change and for running schema validators and policy scanners on real manifests;
it is *not* ``pulumi preview``: cloud-generated values (ARNs, endpoints, bucket names) are invented
by the mocks, secret config cannot be decrypted (Secret values are redacted), and nothing is compared
with live state.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.checks.capacity import capacity_markdown
from infra.config import parse_config
from infra.mockrun import ROOT, SECRET_SIG, CapturedResource, StackRun, run_stack

Obj = dict[str, Any]

K8S_DIR = "k8s"
SUMMARY_FILE = "summary.md"
REDACTED = "REDACTED-by-render"
"""Stands in for every Secret value: the render never writes secret material to disk."""

KIND_ORDER = (
    "Namespace",
    "ServiceAccount",
    "Secret",
    "NetworkPolicy",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "CronJob",
    "EC2NodeClass",
    "NodePool",
)
"""The order objects are written and applied in (namespace first); kinds not listed come last."""

_TOP_KEYS = ("apiVersion", "kind", "metadata")

SUMMARY_KEYS: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("cidrBlock", "enableDnsHostnames", "enableDnsSupport"),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone", "mapPublicIpOnLaunch"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName", "vpcEndpointType", "privateDnsEnabled"),
    "aws:eks/cluster:Cluster": (
        "name",
        "version",
        "vpcConfig",
        "accessConfig",
        "encryptionConfig",
        "enabledClusterLogTypes",
        "upgradePolicy",
    ),
    "aws:eks/nodeGroup:NodeGroup": (
        "instanceTypes",
        "capacityType",
        "amiType",
        "scalingConfig",
        "labels",
        "taints",
    ),
    "aws:ec2/launchTemplate:LaunchTemplate": ("metadataOptions", "blockDeviceMappings"),
    "aws:eks/addon:Addon": ("addonName", "addonVersion", "configurationValues"),
    "aws:ecr/repository:Repository": (
        "name",
        "imageTagMutability",
        "imageScanningConfiguration",
        "encryptionConfigurations",
    ),
    "aws:iam/role:Role": ("description", "assumeRolePolicy"),
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:s3/bucketPolicy:BucketPolicy": ("policy",),
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": ("namespace", "serviceAccount"),
}
"""Per-type settings worth a reviewer's eye; other types show their short scalar inputs."""

_SKIPPED_INPUTS = {"tags", "tagsAll", "__defaults"}


class RenderError(Exception):
    """The stack could not be rendered (bad stack name, bad config, no workloads to render)."""


@dataclass
class RenderResult:
    stack: str
    objects: list[Obj]
    files: list[Path]
    summary: Path
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- object extraction


def _plain(value: Any) -> Any:
    """Mock-captured inputs to plain YAML data: unwrap secret markers, integral floats to ints
    (the protobuf wire format carries every number as a double)."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in sorted(value.items()) if not k.startswith("__")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def is_kubernetes_object(resource: CapturedResource) -> bool:
    """An object the provider sends to the API server (a Helm release is not one: its chart is)."""
    return resource.custom and resource.type.startswith("kubernetes:") and "kind" in resource.inputs


def to_manifest(resource: CapturedResource) -> Obj:
    """The object as the provider would send it to the API server (Secret values redacted)."""
    data = _plain(resource.inputs)
    if data.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if isinstance(data.get(key), dict):
                data[key] = dict.fromkeys(data[key], REDACTED)
    ordered = {k: data[k] for k in _TOP_KEYS if k in data}
    ordered.update({k: v for k, v in data.items() if k not in _TOP_KEYS})
    return ordered


def kubernetes_manifests(run: StackRun) -> list[Obj]:
    objects = [to_manifest(r) for r in run.resources if is_kubernetes_object(r)]
    return sorted(objects, key=lambda o: (_kind_rank(o["kind"]), o["metadata"].get("name", "")))


def manifest_filenames(objects: list[Obj]) -> list[str]:
    """``<position>-<kind>-<name>.yaml``: the prefix is the object's place in apply order, so the
    files list, and ``kubectl apply -f <dir>`` applies them, in the order the render put them."""
    width = max(3, len(str(len(objects))))
    return [
        f"{i:0{width}d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml" for i, obj in enumerate(objects, start=1)
    ]


def dump_yaml(obj: Obj) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)


# --------------------------------------------------------------------------- AWS summary


def _policy_lines(text: str) -> list[str]:
    try:
        doc = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return [str(text)]
    lines = []
    for st in doc.get("Statement", []):
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        target = st.get("Resource") or st.get("Principal")
        cond = f" if {json.dumps(st['Condition'])}" if st.get("Condition") else ""
        lines.append(f"{st.get('Effect')} {', '.join(actions)} on {json.dumps(target)}{cond}")
    return lines


def _settings(resource: CapturedResource) -> list[str]:
    keys = SUMMARY_KEYS.get(resource.type)
    inputs = _plain(resource.inputs)
    out: list[str] = []
    if keys is None:
        for key, value in inputs.items():
            if key in _SKIPPED_INPUTS:
                continue
            if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 100):
                out.append(f"{key}: {json.dumps(value)}")
        return out
    for key in keys:
        if key not in inputs:
            continue
        value = inputs[key]
        if key in ("policy", "assumeRolePolicy"):
            out.extend(f"{key}: {line}" for line in _policy_lines(value))
        else:
            out.append(f"{key}: {json.dumps(value, sort_keys=True)}")
    return out


def aws_summary(run: StackRun) -> str:
    """Markdown: outputs, warnings, AWS resources with their key settings, Kubernetes objects."""
    lines = [
        f"# Offline render of stack `{run.stack}`",
        "",
        "Rendered under Pulumi mocks: IDs, ARNs and endpoints are invented, secrets are redacted, and "
        "nothing was compared with the live stack. Use `pulumi preview` for the real diff.",
        "",
    ]
    if run.warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in run.warnings), ""]
    lines += ["## Stack outputs", ""]
    for key in sorted(run.outputs):
        shown = "[secret]" if key in run.secret_outputs else json.dumps(run.outputs[key], sort_keys=True)
        lines.append(f"- `{key}`: {shown}")
    aws = [r for r in run.resources if r.custom and r.type.startswith("aws:")]
    lines += ["", f"## AWS resources ({len(aws)})", ""]
    if not aws:
        lines.append("None (existing-cluster mode).")
    for r in sorted(aws, key=lambda r: (r.type, r.name)):
        lines.append(f"- **{r.type}** `{r.name}`")
        lines.extend(f"  - {s}" for s in _settings(r))
    if run.config:
        cfg = parse_config(
            run.config, secret_keys=run.secret_keys, stack=run.stack, aws_region=run.config.get("aws:region")
        )
        if cfg.is_eks:
            lines += [
                "",
                "## Capacity per node pool",
                "",
                "Pod requests at minimum scale (serving at its HPA minimum, no job running) and maximum scale "
                "(serving at its HPA maximum, all three jobs at once), against what the pool's limits let "
                "Karpenter launch, in its largest allowed node after DaemonSets and kubelet reservations.",
                "",
                capacity_markdown(cfg).rstrip("\n"),
            ]
    k8s_objects = kubernetes_manifests(run)
    lines += ["", f"## Kubernetes objects ({len(k8s_objects)})", ""]
    for obj, filename in zip(k8s_objects, manifest_filenames(k8s_objects), strict=True):
        meta = obj["metadata"]
        where = f"{meta['namespace']}/" if "namespace" in meta else ""
        lines.append(f"- {obj['kind']} `{where}{meta['name']}` → `{K8S_DIR}/{filename}`")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- render


def render_run(run: StackRun, out: Path) -> RenderResult:
    """Write ``run``'s manifests to ``out/k8s/`` and its summary to ``out/summary.md``.

    ``out/k8s/*.yaml`` from an earlier render is removed first, so a deleted object does not linger
    in the directory a scanner reads.
    """
    k8s_dir = out / K8S_DIR
    k8s_dir.mkdir(parents=True, exist_ok=True)
    for stale in k8s_dir.glob("*.yaml"):
        stale.unlink()
    objects = kubernetes_manifests(run)
    files = []
    for obj, filename in zip(objects, manifest_filenames(objects), strict=True):
        path = k8s_dir / filename
        path.write_text(dump_yaml(obj))
        files.append(path)
    summary = out / SUMMARY_FILE
    summary.write_text(aws_summary(run))
    return RenderResult(run.stack, objects, files, summary, list(run.warnings))


def render(
    stack: str,
    out: Path,
    *,
    image_digest: str | None = None,
    secrets: Mapping[str, str] | None = None,
    root: Path = ROOT,
) -> RenderResult:
    """Run ``Pulumi.<stack>.yaml`` under mocks and write what it declares.

    :param image_digest: render as if ``imageDigest`` were set to this (a fresh stack has none and
        declares no workloads).
    :param secrets: stand-ins for secret config; defaults to :data:`infra.mockrun.DEFAULT_MOCK_SECRETS`.
    """
    import pulumi

    overrides = {"imageDigest": image_digest} if image_digest else None
    try:
        run = run_stack(stack, overrides=overrides, secrets=secrets, root=root)
    except FileNotFoundError as exc:
        known = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))
        raise RenderError(f"{exc}; stacks here: {', '.join(known)}") from None
    except pulumi.RunError as exc:
        raise RenderError(str(exc)) from None
    return render_run(run, out)


# --------------------------------------------------------------------------- CLI


def _command(args: argparse.Namespace) -> int:
    try:
        result = render(args.stack, Path(args.out), image_digest=args.image_digest)
    except RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"stack {result.stack}: {len(result.files)} Kubernetes objects in {Path(args.out) / K8S_DIR}, "
        f"summary in {result.summary}"
    )
    if any("imageDigest is not set" in w for w in result.warnings):
        print(
            "no workloads: the stack has no imageDigest yet; pass --image-digest sha256:<hex> "
            "to render the workloads as they would be with one",
            file=sys.stderr,
        )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render",
        help="write a stack's Kubernetes manifests and an AWS summary, offline (under Pulumi mocks)",
        description=(__doc__ or "").split("\n\n", 1)[1].replace("\n", " "),
    )
    parser.add_argument("--stack", required=True, help="stack name: renders Pulumi.<stack>.yaml")
    parser.add_argument("--out", required=True, help="output directory (k8s/*.yaml and summary.md)")
    parser.add_argument(
        "--image-digest",
        default=None,
        metavar="sha256:<hex>",
        help="render as if the stack's imageDigest were this (a fresh stack has none: no workloads)",
    )
    parser.set_defaults(func=_command)
