"""A Pulumi YAML program that declares what the Python program declares on Kubernetes.

The Go module proxy does not serve the Python language host, so the real Pulumi CLI cannot run the
Python program here; it runs this YAML program instead (``pulumi-language-yaml`` is built from Go
modules with the CLI). The program runs once offline (:func:`infra.mockrun.run_stack`, as ``python
-m infra render`` does) and every Kubernetes object it registers becomes a YAML resource with the
same inputs and the options that matter to the engine: its dependencies (explicit ``depends_on`` and
those that flow through outputs), ``ignoreChanges`` and ``deleteBeforeReplace``. Secret inputs stay
secret (``fn::secret``); their values are the ones given with ``--secret KEY=VALUE`` (stand-ins
otherwise), so the YAML file holds them: write it to a private directory.

    python engine/yaml_program.py --stack local --image-digest sha256:<hex> --out DIR

writes ``DIR/Pulumi.yaml``; a stack of it needs the secret config ``kubeconfig``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.mockrun import SECRET_SIG, CapturedResource, StackRun, run_stack  # noqa: E402
from infra.render import is_kubernetes_object  # noqa: E402

Obj = dict[str, Any]
PROJECT = "purchase-classifier-engine"
PROVIDER = "cluster"


def resource_name(resource: CapturedResource) -> str:
    return f"{resource.inputs['kind'].lower()}-{resource.inputs['metadata']['name']}"


def yaml_value(value: Any) -> Any:
    """Captured inputs as YAML program values: secrets as ``fn::secret``, integral floats as ints
    (the wire format carries numbers as doubles), ``${`` escaped (YAML interpolation)."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return {"fn::secret": yaml_value(value.get("value"))}
        return {k: yaml_value(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [yaml_value(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.replace("${", "$${")
    return value


def _custom_dependencies(run: StackRun, resource: CapturedResource) -> list[str]:
    """URNs of the Kubernetes objects ``resource`` waits for; a component stands for its objects."""
    children: dict[str, list[str]] = {}
    for r in run.resources:
        children.setdefault(r.parent, []).append(r.urn)
    by_urn = run.by_urn()
    out: list[str] = []
    pending = list(resource.dependencies)
    while pending:
        urn = pending.pop(0)
        dep = by_urn.get(urn)
        if dep is None or urn in out:
            continue
        if dep.custom:
            out.append(urn)
        else:
            pending.extend(children.get(urn, []))
    return [u for u in out if is_kubernetes_object(by_urn[u])]


def program(run: StackRun) -> Obj:
    """The Pulumi.yaml declaring ``run``'s Kubernetes objects through one provider (config ``kubeconfig``)."""
    objects = [r for r in run.resources if is_kubernetes_object(r) and "kind" in r.inputs]
    names = {r.urn: resource_name(r) for r in objects}
    resources: Obj = {PROVIDER: {"type": "pulumi:providers:kubernetes", "properties": {"kubeconfig": "${kubeconfig}"}}}
    for r in objects:
        options: Obj = {"provider": f"${{{PROVIDER}}}"}
        depends = [names[u] for u in _custom_dependencies(run, r)]
        if depends:
            options["dependsOn"] = [f"${{{d}}}" for d in depends]
        for key in ("ignoreChanges", "deleteBeforeReplace"):
            if r.options.get(key):
                options[key] = r.options[key]
        properties = {k: yaml_value(v) for k, v in r.inputs.items() if k not in ("apiVersion", "kind")}
        resources[names[r.urn]] = {"type": r.type, "properties": properties, "options": options}
    return {
        "name": PROJECT,
        "runtime": "yaml",
        "config": {"kubeconfig": {"type": "string", "secret": True}},
        "resources": resources,
    }


def write_program(
    stack: str,
    out: Path,
    *,
    image_digest: str | None = None,
    secrets: Mapping[str, str] | None = None,
    root: Path = ROOT,
) -> Path:
    """Run ``root``'s ``Pulumi.<stack>.yaml`` offline and write its YAML program to ``out/Pulumi.yaml``."""
    overrides = {"imageDigest": image_digest} if image_digest else None
    run = run_stack(stack, overrides=overrides, secrets=secrets, root=root)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "Pulumi.yaml"
    path.write_text(yaml.safe_dump(program(run), sort_keys=False, width=120))
    path.chmod(0o600)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--image-digest", help="run as if the stack's imageDigest were this")
    parser.add_argument("--root", type=Path, default=ROOT, help="directory of the Pulumi.<stack>.yaml files")
    parser.add_argument("--secret", action="append", default=[], metavar="KEY=VALUE", help="secret config value")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    secrets = dict(s.split("=", 1) for s in args.secret) if args.secret else None
    print(write_program(args.stack, args.out, image_digest=args.image_digest, secrets=secrets, root=args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
