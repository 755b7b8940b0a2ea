"""Run the project's Pulumi program through the real Pulumi engine, with the Automation API.

Why the Automation API: the CLI runs a Python program through a language host binary
(``pulumi-language-python``) that the Go module proxy this project builds its tools from does not
serve (see docs/engine.md). An *inline* Automation API program needs none: the SDK serves the
language-host protocol in this process and starts the real ``pulumi`` CLI with ``--client``. The
CLI, the engine, the Kubernetes provider, the state backend and the program
(:func:`infra.program.main`) are the real ones; only the language-host process is the SDK's.

The work directory holds ``Pulumi.yaml``, its ``main`` (the CLI checks that ``infra/`` exists; a copy
of the stack files can link the repository's) and ``Pulumi.<stack>.yaml``, so the stack config is read
from the stack file exactly as ``pulumi up`` would read it, and secrets set here are encrypted into
that file by the stack's secrets provider (the passphrase one with a file backend).

``python -m infra.engine preview|up|refresh|destroy --stack local --backend file://DIR`` streams the
engine's output; ``PULUMI_CONFIG_PASSPHRASE`` must be set. ``recover`` repairs a stack after an
interrupted run (:mod:`infra.recover`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from pulumi import automation as auto

from infra.naming import PROJECT
from infra.recover import DEFAULT_MIN_LOCK_AGE, RecoverError, recover, stale_locks

ROOT = Path(__file__).resolve().parent.parent
FIXED_ENV = {"PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
"""No update check, no plugin download: the CLI uses the provider on ``PATH``."""


def _program() -> None:
    from infra.program import main

    main()


def build_tools() -> Path:
    """The directory of the engine binaries (``engine/build-tools`` builds them on first use)."""
    out = subprocess.run([str(ROOT / "engine" / "build-tools")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def open_stack(
    stack: str,
    *,
    work_dir: Path,
    bin_dir: Path,
    backend: str,
    env: Mapping[str, str] | None = None,
    create: bool = True,
) -> auto.Stack:
    """Select (or, with ``create``, create) ``stack`` of the project in ``work_dir``, run by the CLI
    in ``bin_dir``."""
    env_vars = {
        **FIXED_ENV,
        **(env or {}),
        "PULUMI_BACKEND_URL": backend,
        "PATH": f"{bin_dir}{os.pathsep}{(env or os.environ).get('PATH', '')}",
    }
    return (auto.create_or_select_stack if create else auto.select_stack)(
        stack_name=stack,
        project_name=PROJECT,
        program=_program,
        opts=auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            env_vars=env_vars,
            pulumi_command=auto.PulumiCommand(root=str(bin_dir.parent), skip_version_check=True),
        ),
    )


def preview(stack: auto.Stack, *, diff: bool = True, stream: bool = True) -> auto.PreviewResult:
    """``pulumi preview [--diff]``: the text in ``stdout``, the counts per operation in ``change_summary``."""
    return stack.preview(
        diff=diff, color="never", on_output=_echo(stream, sys.stdout), on_error=_echo(stream, sys.stderr)
    )


def planned_steps(stack: auto.Stack) -> dict[str, dict[str, Any]]:
    """``pulumi preview --json``: the steps that change something (with their ``detailedDiff``), by
    ``<type>::<name>`` (names repeat across types). The event stream's step metadata carries no diff
    in a preview, hence the JSON output."""
    out = json.loads(stack.preview(json=True, color="never").stdout)
    return {resource_key(s["urn"]): s for s in out.get("steps", []) if s["op"] != "same"}


def resource_key(urn: str) -> str:
    """``<type>::<name>`` of a URN (``urn:pulumi:<stack>::<project>::<parent types$>type::name``)."""
    *_, qualified_type, name = urn.split("::")
    return f"{qualified_type.rsplit('$', 1)[-1]}::{name}"


def up(stack: auto.Stack, *, refresh: bool = False, stream: bool = True) -> auto.UpResult:
    """``pulumi up`` (``--refresh``: read the live objects first, as a drift check does)."""
    return stack.up(
        refresh=refresh, color="never", on_output=_echo(stream, sys.stdout), on_error=_echo(stream, sys.stderr)
    )


def refresh(stack: auto.Stack, *, stream: bool = True) -> auto.RefreshResult:
    return stack.refresh(color="never", on_output=_echo(stream, sys.stdout), on_error=_echo(stream, sys.stderr))


def destroy(stack: auto.Stack, *, stream: bool = True) -> auto.DestroyResult:
    return stack.destroy(color="never", on_output=_echo(stream, sys.stdout), on_error=_echo(stream, sys.stderr))


def _echo(stream: bool, to: TextIO) -> auto.OnOutput | None:
    """Echo the CLI's output as it comes (a rollout can take minutes)."""
    if not stream:
        return None
    return lambda line: print(line, end="" if line.endswith("\n") else "\n", file=to, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("preview", "up", "refresh", "destroy", "recover"))
    parser.add_argument("--stack", required=True)
    parser.add_argument("--work-dir", type=Path, default=ROOT, help="holds Pulumi.yaml and the stack file")
    parser.add_argument("--backend", default=os.environ.get("PULUMI_BACKEND_URL"), help="state backend URL")
    parser.add_argument("--bin", type=Path, help="engine binaries (default: engine/build-tools' output)")
    parser.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="KEY=VAR",
        help="set the secret config KEY (of this project) from environment variable VAR first",
    )
    parser.add_argument(
        "--min-lock-age",
        type=float,
        default=DEFAULT_MIN_LOCK_AGE.total_seconds() / 60,
        metavar="MINUTES",
        help="recover: a lock taken on another host counts as alive while younger than this "
        "(default: %(default)g, the deploy jobs' longest timeout)",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="URN=ID",
        help="recover: the provider ID of a pending create whose ID only a person can look up",
    )
    args = parser.parse_args(argv)
    given_ids = {}
    for item in args.imports:
        urn, sep, id_ = item.rpartition("=")
        if not sep or not urn.startswith("urn:pulumi:") or not id_:
            parser.error(f"--import {item}: expected URN=ID (the URN that recover printed, then the ID)")
        given_ids[urn] = id_
    if args.min_lock_age < 0:
        parser.error(f"--min-lock-age: got {args.min_lock_age}, expected minutes >= 0")
    if not args.backend:
        parser.error("no state backend: pass --backend or set PULUMI_BACKEND_URL")
    secrets = {}
    for item in args.secret_env:
        key, _, var = item.partition("=")
        if not key or var not in os.environ:
            parser.error(f"--secret-env {item}: expected KEY=VAR with the environment variable VAR set")
        secrets[key] = os.environ[var]
    if args.command == "recover":
        return _recover(
            args.stack,
            work_dir=args.work_dir,
            bin_dir=args.bin,
            backend=args.backend,
            min_age=args.min_lock_age,
            given_ids=given_ids,
        )
    stack = open_stack(args.stack, work_dir=args.work_dir, bin_dir=args.bin or build_tools(), backend=args.backend)
    for key, value in secrets.items():
        stack.set_config(f"{PROJECT}:{key}", auto.ConfigValue(value, secret=True))
    try:
        commands: dict[str, Callable[[auto.Stack], object]] = {
            "preview": preview,
            "up": up,
            "refresh": refresh,
            "destroy": destroy,
        }
        commands[args.command](stack)
    except auto.CommandError as exc:
        print(f"pulumi {args.command} failed (its output is above)", file=sys.stderr)
        if "currently locked" in str(exc):
            print(
                f"if no other run is going, an interrupted run left its lock: "
                f"python -m infra.engine recover --stack {args.stack}",
                file=sys.stderr,
            )
        return 1
    return 0


def _recover(
    stack_name: str,
    *,
    work_dir: Path,
    bin_dir: Path | None,
    backend: str,
    min_age: float,
    given_ids: Mapping[str, str],
) -> int:
    try:
        # The lock first: a run that may still be going is refused before anything else happens.
        locks = stale_locks(backend, stack_name, timedelta(minutes=min_age))
        stack = open_stack(
            stack_name, work_dir=work_dir, bin_dir=bin_dir or build_tools(), backend=backend, create=False
        )
        done = recover(
            stack,
            locks,
            given_ids=given_ids,
            on_output=_echo(True, sys.stdout),
            on_error=_echo(True, sys.stderr),
        )
    except RecoverError as exc:
        print(f"recover: {exc}", file=sys.stderr)
        return 1
    except auto.StackNotFoundError:
        print(f"recover: no stack {stack_name!r} in {backend}", file=sys.stderr)
        return 1
    except auto.CommandError as exc:
        print(f"recover: a pulumi command failed: {exc}", file=sys.stderr)
        return 1
    if done.manual:
        print(f"recover: {len(done.manual)} pending create(s) need an ID only you can look up (above)", file=sys.stderr)
        return 2
    print(f"recover: stack {stack_name} is ready for `python -m infra.engine up --stack {stack_name}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
