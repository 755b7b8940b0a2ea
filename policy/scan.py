"""Run the policy pack offline over a stack's resources as the program declares them.

``pulumi preview --policy-pack policy`` needs the Pulumi CLI, a backend and cloud credentials; a
reviewer of a pull request (or a laptop) has none of them. This runs the same pure rules over the
resources :mod:`infra.mockrun` captures under Pulumi's mocks and writes a Markdown report, so the PR
workflow can attach it next to the offline render. Exit status 1 when any rule is violated.

Usage::

    python -m policy.scan --stack dev [--stack prod ...] [--placeholder-digest sha256:<hex>] [--out FILE]

``--placeholder-digest`` is used only for stacks whose ``imageDigest`` is still empty, so a fresh
stack's workloads are checked too (without a digest the program declares none).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from policy.rules import RESOURCE_RULES, STACK_RULES, StackResource


def scan_stack(stack: str, placeholder_digest: str | None = None) -> tuple[int, list[str]]:
    """``(resource count, violation lines)`` for one stack."""
    from infra.mockrun import run_stack
    from infra.promote import read_digest

    overrides = None
    if placeholder_digest and not read_digest(stack):
        overrides = {"imageDigest": placeholder_digest}
    run = run_stack(stack, overrides=overrides)
    lines: list[str] = []
    for res in run.resources:
        for rule in RESOURCE_RULES:
            lines.extend(f"{rule.name}: {res.type} `{res.name}`: {m}" for m in rule.check(res.type, res.inputs))
    resources = [
        StackResource(r.type, r.urn, r.inputs, frozenset(r.dependencies), bool(r.options.get("protect")))
        for r in run.resources
    ]
    for stack_rule in STACK_RULES:
        lines.extend(f"{stack_rule.name}: {urn}: {message}" for urn, message in stack_rule.check(resources))
    return len(run.resources), lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policy.scan", description=__doc__)
    parser.add_argument("--stack", action="append", required=True, help="stack to scan (repeatable)")
    parser.add_argument("--placeholder-digest", default=None, help="digest for stacks that have none yet")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = parser.parse_args(argv)

    report = ["# Policy pack (offline, over the mock-captured resources)", ""]
    failed = False
    for stack in args.stack:
        count, violations = scan_stack(stack, args.placeholder_digest)
        status = "PASS" if not violations else f"FAIL ({len(violations)})"
        report.append(f"## {stack}: {status}, {count} resources, {len(RESOURCE_RULES) + len(STACK_RULES)} rules")
        report.extend(f"- {line}" for line in violations)
        report.append("")
        failed = failed or bool(violations)
    text = "\n".join(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
