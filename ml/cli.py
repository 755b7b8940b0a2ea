"""One CLI for every job: ``python -m ml <command>``.

Each command lives next to its code and adds its own sub-parser; this module only dispatches and
turns the project's errors into one clear line on stderr and a documented exit code
(:class:`ml.errors.ExitCode`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import typing
from collections.abc import Sequence

from ml.errors import ExitCode, MlError

#: Command -> the module that adds its parser with ``add_parser(subparsers)``. Only the module of
#: the command being run is imported: scikit-learn, FastAPI and friends take seconds to import, and
#: ``python -m ml dask worker`` should not pay for them.
COMMAND_MODULES = {
    "train": "ml.jobs.train",
    "evaluate": "ml.jobs.evaluate",
    "models": "ml.models_cli",
    "db": "ml.db",
    "refresh": "ml.jobs.refresh",
    "predict": "ml.jobs.predict",
    "review": "ml.review",
    "serve": "ml.serve.cli",
    "dask": "ml.dask_cli",
    "demo": "ml.demo",
}

#: Exit status after the reader of stdout went away (``| head``): what a process killed by SIGPIPE
#: reports in a shell (128 + 13), as ``yes | head`` does.
CLOSED_PIPE_EXIT = 141

EPILOG = "exit codes: " + ", ".join(f"{code.value} {code.name.lower().replace('_', ' ')}" for code in ExitCode)


class Parser(argparse.ArgumentParser):
    """argparse with a bad flag reported as one line naming it (exit 2), not usage and the error.

    Sub-parsers are built with the parent's class, so every command reports the same way.
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(int(ExitCode.BAD_INPUT), f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``command`` only that command's module is imported."""
    parser = Parser(
        prog="python -m ml",
        description="Train, evaluate, batch-predict and serve the purchase classifier.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    selected = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else COMMAND_MODULES.values()
    for name in selected:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not built yet; the others still work
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        # Inside the try: flag defaults read settings from the environment, which may be wrong.
        args = build_parser(command).parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("distributed").setLevel(logging.WARNING)
        return int(args.func(args) or ExitCode.OK)
    except BrokenPipeError:
        return _closed_pipe()
    except MlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _closed_pipe() -> int:
    """The reader of stdout is gone (``python -m ml models list | head -1``): stop quietly.

    Output still buffered would fail again when the interpreter flushes stdout at exit ("Exception
    ignored ... BrokenPipeError"), so stdout is pointed at /dev/null first (the recipe of Python's
    ``signal`` documentation).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return CLOSED_PIPE_EXIT
