"""``python -m infra <command>``: the platform's offline tools, one argparse CLI.

Commands live in their own modules, each exposing ``add_parser(subparsers)`` that registers a
sub-parser with ``func`` set. A module that is not there (yet) is skipped, so the CLI works while
commands are added; any other import error is a real bug and propagates.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

COMMAND_MODULES = ("infra.render", "infra.promote", "infra.reach")


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra",
        description="Offline tools for the purchase-classifier platform (the Pulumi program itself "
        "runs through `pulumi preview/up`).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, modules: Sequence[str] = COMMAND_MODULES) -> int:
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
