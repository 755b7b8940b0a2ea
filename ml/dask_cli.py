"""``python -m ml dask scheduler|worker …``: the Dask processes, started from the project's image.

The image's entrypoint is ``python -m ml``; these commands hand their arguments to Dask's own
``dask scheduler`` / ``dask worker`` CLIs unchanged, so every Dask flag works and the processes run
exactly the packages the jobs run.
"""

from __future__ import annotations

import argparse
import os
import sys


def _run(args: argparse.Namespace) -> int:
    # exec keeps signals (SIGTERM from the kubelet) going straight to Dask.
    os.execv(sys.executable, [sys.executable, "-m", "dask", args.role, *args.dask_args])
    return 0  # not reached


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dask", help="run a Dask scheduler or worker (arguments go to Dask)")
    parser.add_argument("role", choices=["scheduler", "worker"])
    parser.add_argument("dask_args", nargs=argparse.REMAINDER, help="arguments for `dask <role>`")
    parser.set_defaults(func=_run)
