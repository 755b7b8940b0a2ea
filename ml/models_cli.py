"""``python -m ml models list|show``: what a store holds and which version is served."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ml.registry import ModelRegistry
from ml.settings import add_model_name_argument, add_store_argument


def list_versions(args: argparse.Namespace) -> int:
    registry = ModelRegistry(args.store, args.model_name)
    versions = registry.versions()
    latest = registry.latest_version()
    if args.json:
        print(json.dumps([{**_summary(v), "latest": v["version"] == latest} for v in versions]))
        return 0
    table = Table(title=f"{args.model_name} in {args.store}")
    for column in ("version", "latest", "accuracy", "macro-F1", "rows", "snapshot", "created"):
        table.add_column(column)
    for entry in versions:
        summary = _summary(entry)
        table.add_row(
            summary["version"],
            "LATEST" if entry["version"] == latest else "",
            f"{summary['accuracy']:.4f}",
            f"{summary['macro_f1']:.4f}",
            str(summary["train_rows"]),
            str(summary["snapshot"] or "-"),
            summary["created_at"],
        )
    Console().print(table if versions else f"no versions of {args.model_name} in {args.store}")
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
    if not args.per_class:
        entry = {**entry, "metrics": {k: v for k, v in entry["metrics"].items() if k != "per_class"}}
    print(json.dumps(entry, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list and inspect stored model versions")
    commands = parser.add_subparsers(dest="models_command", required=True)
    for name, func, help_text in (
        ("list", list_versions, "every complete version, LATEST marked"),
        ("show", show, "one version's metadata as JSON"),
    ):
        sub = commands.add_parser(name, help=help_text)
        add_store_argument(sub)
        add_model_name_argument(sub)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(func=func)
    commands.choices["show"].add_argument("version", nargs="?", default="latest", help="version or 'latest'")
    commands.choices["show"].add_argument("--per-class", action="store_true", help="include per-class metrics")
