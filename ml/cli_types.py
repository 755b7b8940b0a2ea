"""Argparse ``type=`` functions for every numeric and output-path option of ``python -m ml``.

A flag is input from outside the process (DESIGN principle 6), so each one is checked where argparse
reads it: a value out of range ends the command before any work, with exit code 2 and one line
naming the option (``argument --folds: must be an integer >= 2, got 0``). ``float()`` accepts
``nan`` and ``inf``, and every comparison with NaN is false, so a NaN share would silently disable a
``> limit`` guard: non-finite numbers are refused everywhere.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer ``>= minimum`` (row counts, folds)."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def float_between(low: float, high: float, *, high_inclusive: bool = True) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (or ``[low, high)``)."""
    closing = "]" if high_inclusive else ")"

    def parse(text: str) -> float:
        value = _number(text, float)
        if value < low or value > high or (value == high and not high_inclusive):
            raise argparse.ArgumentTypeError(f"must be a number in [{low:g}, {high:g}{closing}, got {text}")
        return value

    parse.__name__ = f"number in [{low:g}, {high:g}{closing}"
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


#: A share of rows (bad rows, unlabelled rows) or a probability (confidence threshold).
share = float_between(0.0, 1.0)
#: Rows per partition, chunk or file.
positive_int = int_at_least(1)


def output_file(text: str) -> Path:
    """A file the command will write: its directory must exist and be writable *before* any work.

    A report written after minutes of work into a missing directory would lose that work; the
    directory is not created for the user, since a typo in it should not create a tree elsewhere.
    """
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"directory {parent} is not writable")
    return path
