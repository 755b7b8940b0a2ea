"""``python -m ml models list|show|candidate|promote|reject|report``: what a store holds, which version is
served, and the candidate tried beside it on live traffic (``ML_CANDIDATE_MODE`` of the service)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ml import report
from ml.cli_types import share
from ml.errors import GateRejectedError
from ml.registry import ModelRegistry
from ml.settings import add_model_name_argument, add_store_argument


def list_versions(args: argparse.Namespace) -> int:
    registry = ModelRegistry(args.store, args.model_name)
    listing = registry.listing()
    versions = [entry.metadata for entry in listing if entry.metadata is not None]
    # a version whose metadata cannot be read is shown as broken; the others are listed as usual
    broken = {entry.version: entry.error for entry in listing if entry.metadata is None}
    latest, candidate = registry.pointed_versions()
    if args.json:
        print(
            json.dumps(
                [
                    {**_summary(v), "latest": v["version"] == latest, "candidate": v["version"] == candidate}
                    for v in versions
                ]
                + [
                    {"version": v, "broken": reason, "latest": v == latest, "candidate": v == candidate}
                    for v, reason in broken.items()
                ]
            )
        )
        return 0
    table = Table(title=f"{args.model_name} in {args.store}")
    for column in ("version", "pointer", "accuracy", "macro-F1", "rows", "snapshot", "created"):
        # identifiers are copied into other commands: never wrapped or cut, other columns give way
        whole = column in {"version", "snapshot"}
        table.add_column(column, no_wrap=whole, overflow="fold" if not whole else "ignore")
    pointers = {latest: "LATEST", candidate: "CANDIDATE"}
    for entry in versions:
        summary = _summary(entry)
        table.add_row(
            summary["version"],
            pointers.get(entry["version"], ""),
            f"{summary['accuracy']:.4f}",
            f"{summary['macro_f1']:.4f}",
            str(summary["train_rows"]),
            str(summary["snapshot"] or "-"),
            summary["created_at"],
        )
    for version, reason in broken.items():
        table.add_row(version, pointers.get(version, ""), f"broken: {reason}", "", "", "", "")
    console = Console()
    if not console.is_terminal:  # a pipe or a file has no width: print every column whole
        console = Console(width=max(80, Console(width=100_000).measure(table).maximum))
    console.print(table if versions or broken else f"no versions of {args.model_name} in {args.store}")
    return 0


def _summary(entry: dict) -> dict:
    return {
        "version": entry["version"],
        "accuracy": entry["metrics"]["accuracy"],
        "macro_f1": entry["metrics"]["macro_f1"],
        "train_rows": entry.get("data", {}).get("train_rows"),
        "snapshot": entry.get("data", {}).get("snapshot"),
        "created_at": entry["created_at"],
    }


def show(args: argparse.Namespace) -> int:
    entry = ModelRegistry(args.store, args.model_name).metadata(args.version)
    per_class = entry["metrics"].get("per_class", {})
    if not args.per_class:
        entry = {**entry, "metrics": {k: v for k, v in entry["metrics"].items() if k != "per_class"}}
    if args.json:
        print(json.dumps(entry, indent=2))
        return 0
    console = Console()
    for key, value in _flatten(entry):
        console.print(f"[bold]{key}[/]: {value}", highlight=False, soft_wrap=True)
    if args.per_class and per_class:
        table = Table(title="per class (validation rows)")
        for column in ("category", "precision", "recall", "F1", "support"):
            table.add_column(column, justify="left" if column == "category" else "right")
        for label, scores in sorted(per_class.items(), key=lambda item: -item[1].get("support", 0)):
            table.add_row(
                label,
                *(f"{scores.get(key, 0):.3f}" for key in ("precision", "recall", "f1-score")),
                f"{scores.get('support', 0):.0f}",
            )
        console.print(table)
    return 0


def _flatten(entry: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Metadata as ``a.b: value`` lines; lists and per-class figures are counted (``--json`` has them)."""
    lines: list[tuple[str, str]] = []
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if key == "per_class":
            continue
        if isinstance(value, dict) and prefix.count(".") < 1:
            lines.extend(_flatten(value, f"{name}."))
        elif isinstance(value, list | dict):
            text = json.dumps(value)
            lines.append((name, text if len(text) <= 100 else f"{len(value)} entries (see --json)"))
        else:
            lines.append((name, str(value)))
    return lines


def verify(args: argparse.Namespace) -> int:
    """Check one version as ``candidate`` and ``promote`` do before moving a pointer; print each check."""
    registry = ModelRegistry(args.store, args.model_name)
    for check, detail in registry.verify(args.version):
        print(f"ok  {check:<9} {detail}")
    print(f"verified {args.model_name}/{registry.resolve(args.version)}")
    return 0


def convert(args: argparse.Namespace) -> int:
    """Rewrite a version stored as a joblib pickle in the safe format (skops), in place."""
    registry = ModelRegistry(args.store, args.model_name)
    converted = registry.convert(args.version)
    version = registry.resolve(args.version)
    if converted is None:
        print(json.dumps({"version": version, "format": "skops", "converted": False}))
        return 0
    print(json.dumps({"version": version, "format": converted["format"], "converted": converted["converted"]}))
    return 0


def candidate(args: argparse.Namespace) -> int:
    """Make a stored version the CANDIDATE, through the same quality gate as LATEST."""
    registry = ModelRegistry(args.store, args.model_name)
    version = registry.resolve(args.version)
    decision = registry.gate(registry.metadata(version)["metrics"], args.gate_tolerance)
    if not decision.promoted:
        raise GateRejectedError(f"version {version} not made CANDIDATE: {decision.reason}")
    registry.propose(version)
    print(json.dumps({"candidate": version, "gate": decision.reason}))
    return 0


def promote(args: argparse.Namespace) -> int:
    version = ModelRegistry(args.store, args.model_name).promote_candidate()
    print(json.dumps({"latest": version}))
    return 0


def reject(args: argparse.Namespace) -> int:
    version = ModelRegistry(args.store, args.model_name).reject_candidate()
    print(json.dumps({"rejected": version}))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list and inspect versions; try, promote or reject a candidate")
    commands = parser.add_subparsers(dest="models_command", required=True)
    for name, func, help_text in (
        ("list", list_versions, "every complete version, LATEST and CANDIDATE marked"),
        ("show", show, "one version's metadata as JSON"),
        ("candidate", candidate, "make a stored version the CANDIDATE (gated against LATEST)"),
        ("promote", promote, "move LATEST to the CANDIDATE and remove the CANDIDATE pointer"),
        ("reject", reject, "remove the CANDIDATE pointer (LATEST keeps serving alone)"),
        ("verify", verify, "check a version's names, metadata, artifact sha256 and safe loading"),
        ("convert", convert, "rewrite a version stored as a joblib pickle as skops (unpickles it: trust it first)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        add_store_argument(sub)
        add_model_name_argument(sub)
        sub.set_defaults(func=func)
    for name in ("list", "show"):
        commands.choices[name].add_argument("--json", action="store_true", help="machine-readable output")
    commands.choices["show"].add_argument(
        "version", nargs="?", default="latest", help="version, 'latest' or 'candidate'"
    )
    commands.choices["show"].add_argument("--per-class", action="store_true", help="include per-class metrics")
    commands.choices["candidate"].add_argument("version", help="a stored version id")
    for name in ("verify", "convert"):
        commands.choices[name].add_argument("version", help="version, 'latest' or 'candidate'")
    commands.choices["candidate"].add_argument(
        "--gate-tolerance", type=share, default=0.01, help="allowed macro-F1 drop against the current LATEST"
    )
    report.add_parser(commands)
