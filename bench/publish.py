"""Write a benchmark's table into docs/benchmarks.md, so the figures there come from a command.

Each published table sits between ``<!-- bench:<name> -->`` and ``<!-- /bench:<name> -->`` markers,
followed by one line saying when, by which command and at what load it was measured. A benchmark
calls :func:`publish` when run with ``--publish`` (``make bench`` passes it); without the flag it
only prints. A marker pair that no benchmark fills is an error of the docs test.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)


def measured_line(command: str | None = None) -> str:
    command = command or " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    load = os.getloadavg()[0]
    cores = os.cpu_count()
    return f"Measured {dt.date.today().isoformat()} by `{command}` on {cores} cores, load average {load:.1f}."


def publish(name: str, markdown: str, command: str | None = None, doc: Path = DOC) -> None:
    """Replace the block ``name`` of ``doc`` with ``markdown`` and the measured-by line."""
    text = doc.read_text(encoding="utf-8")
    pattern = _block(name)
    if not pattern.search(text):
        raise SystemExit(f"{doc.name} has no <!-- bench:{name} --> ... <!-- /bench:{name} --> block")
    body = f"{markdown.rstrip()}\n\n{measured_line(command)}\n"
    doc.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text, count=1), encoding="utf-8")
    print(f"published {name} into {doc}", file=sys.stderr)


def blocks(doc: Path = DOC) -> list[str]:
    """The names of the published blocks of ``doc``."""
    return re.findall(r"<!-- bench:([\w-]+) -->", doc.read_text(encoding="utf-8"))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
