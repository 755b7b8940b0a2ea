"""Errors and the process exit codes they map to.

Every job and the CLI share these codes, so a CronJob's exit status tells an operator which kind of
failure happened without reading logs: bad data is fixed upstream, infrastructure is retried.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of ``python -m ml``."""

    OK = 0
    #: An unexpected bug; the traceback is printed.
    UNEXPECTED = 1
    #: Bad input: unreadable or invalid data, bad arguments, an unknown model version.
    BAD_INPUT = 2
    #: The new model was trained and stored but the quality gate kept LATEST where it was.
    GATE_REJECTED = 3
    #: Infrastructure: scheduler unreachable, version mismatch, storage or database failure.
    INFRASTRUCTURE = 4
    #: Nothing to work on: no LATEST model, no snapshot, an empty source table.
    NOT_FOUND = 5


class MlError(Exception):
    """Base of the errors the CLI turns into a one-line message and an exit code."""

    exit_code = ExitCode.UNEXPECTED


class BadInputError(MlError):
    exit_code = ExitCode.BAD_INPUT


class GateRejectedError(MlError):
    exit_code = ExitCode.GATE_REJECTED


class InfrastructureError(MlError):
    exit_code = ExitCode.INFRASTRUCTURE


class NotFoundError(MlError):
    exit_code = ExitCode.NOT_FOUND


class IntegrityError(BadInputError):
    """An artifact whose bytes don't match the sha256 recorded in its metadata."""
