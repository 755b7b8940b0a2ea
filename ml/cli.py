"""One CLI for every job: ``python -m ml <command>``.

Each command lives next to its code and adds its own sub-parser; this module only dispatches and
turns the project's errors into one clear line on stderr and a documented exit code
(:class:`ml.errors.ExitCode`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ml.errors import ExitCode, MlError

#: Modules that contribute commands, each with ``add_parser(subparsers)``.
COMMAND_MODULES = (
    "ml.jobs.train",
    "ml.jobs.evaluate",
    "ml.models_cli",
    "ml.db",
    "ml.jobs.refresh",
    "ml.jobs.predict",
    "ml.serve.cli",
    "ml.dask_cli",
    "ml.demo",
)

EPILOG = "exit codes: " + ", ".join(
    f"{code.value} {code.name.lower().replace('_', ' ')}" for code in ExitCode
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml",
        description="Train, evaluate, batch-predict and serve the purchase classifier.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not built yet; the others still work
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or ExitCode.OK)
    except MlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
