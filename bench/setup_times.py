"""Time the README's set-up commands as a newcomer runs them, and publish the table.

- ``make demo`` in this checkout (after installation), under ``/usr/bin/time -v``: wall clock,
  CPU time (user + system) and the peak memory of its largest process;
- with ``--fresh-clone``, ``make test`` in a fresh ``git clone`` of this checkout (the engine tools
  are cached outside the clone; a machine without them adds their first build, see docs/engine.md).

Usage: .venv/bin/python bench/setup_times.py [--fresh-clone] [--publish]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from publish import markdown_table, publish

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float
    peak_gb: float
    tail: str


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def timed(command: list[str], cwd: Path) -> Timing:
    result = subprocess.run(["/usr/bin/time", "-v", *command], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    report = result.stderr
    field = lambda label: re.search(rf"{re.escape(label)}: (.+)", report).group(1)  # noqa: E731
    return Timing(
        wall_s=_seconds(field("Elapsed (wall clock) time (h:mm:ss or m:ss)")),
        cpu_s=float(field("User time (seconds)")) + float(field("System time (seconds)")),
        peak_gb=int(field("Maximum resident set size (kbytes)")) / 1024**2,
        tail=result.stdout,
    )


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh-clone", action="store_true", help="also time make test in a fresh clone")
    parser.add_argument("--publish", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()

    subprocess.run(["make", "env"], cwd=ROOT, check=True, capture_output=True)
    demo = timed(["make", "demo"], ROOT)
    rows = [
        [
            "`make demo` (after installation)",
            _minutes(demo.wall_s),
            f"{_minutes(demo.cpu_s)} of CPU; {demo.peak_gb:.2f} GB peak memory of its largest process",
        ]
    ]
    if args.fresh_clone:
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
            test = timed(["make", "test"], clone)
        summary = re.findall(r"^=*\s*(\d+ passed.*?) in ", test.tail, re.M)
        rows.append(
            [
                "`make test` from a fresh clone, engine tools cached",
                _minutes(test.wall_s),
                f"{summary[-1] if summary else 'see the output'}; installation, ruff, mypy, the Debian test "
                "servers and the whole suite",
            ]
        )
    table = markdown_table(["command", "time", "notes"], rows)
    print(table)
    if args.publish:
        publish("setup-times", table)


if __name__ == "__main__":
    main()
