"""Bad numbers and output paths on the command line: refused by argparse before any work.

Each case is what a careless user (or a script with an empty variable) would type; the answer is
exit code 2 and one line on stderr naming the option, never a traceback, a silently disabled
guard (``nan`` compares false with everything) or minutes of work lost to a missing directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ml import cli, cli_types
from ml.errors import ExitCode

DATA = ["--data", "data/purchases_labeled.csv.gz"]

REFUSED = [
    (["train", *DATA, "--max-bad-share", "nan"], "--max-bad-share", "finite"),
    (["train", *DATA, "--max-bad-share", "1.5"], "--max-bad-share", "[0, 1]"),
    (["train", *DATA, "--folds", "0"], "--folds", ">= 2"),
    (["train", *DATA, "--folds", "1"], "--folds", ">= 2"),
    (["train", *DATA, "--folds", "two"], "--folds", "integer"),
    (["train", *DATA, "--gate-tolerance=-0.1"], "--gate-tolerance", "[0, 1]"),
    (["models", "candidate", "v1", "--gate-tolerance", "nan"], "--gate-tolerance", "finite"),
    (["train", *DATA, "--dask-timeout", "0"], "--dask-timeout", "> 0"),
    (["train", *DATA, "--search", "--search-budget", "inf"], "--search-budget", "finite"),
    (["evaluate", *DATA, "--max-bad-share", "nan"], "--max-bad-share", "finite"),
    (["evaluate", *DATA, "--chunk-rows", "0"], "--chunk-rows", ">= 1"),
    (["predict", "--partition-rows", "0"], "--partition-rows", ">= 1"),
    (["predict", "--write-chunk-rows=-5"], "--write-chunk-rows", ">= 1"),
    (["predict", "--review-threshold", "5"], "--review-threshold", "[0, 1]"),
    (["predict", "--max-bad-share=-inf"], "--max-bad-share", "finite"),
    (["predict", "--dask-timeout", "nan"], "--dask-timeout", "finite"),
    (["refresh", "--rows-per-file", "0"], "--rows-per-file", ">= 1"),
    (["refresh", "--max-bad-share", "NaN"], "--max-bad-share", "finite"),
    (["db", "seed", *DATA, "--unlabeled-share=-0.1"], "--unlabeled-share", "[0, 1]"),
    (["demo", "--unlabeled-share", "1"], "--unlabeled-share", "[0, 1)"),
]


@pytest.mark.parametrize(("argv", "option", "says"), REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_a_bad_number_is_one_line_naming_the_option(
    argv: list[str], option: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}" in err and says in err, err


def test_a_plot_in_a_missing_directory_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --model names no store at all: had argparse let the path through, this would fail later, differently
    argv = ["evaluate", *DATA, "--model", str(tmp_path / "nowhere"), "--plot", str(tmp_path / "no" / "cm.png")]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "argument --plot" in err and f"directory {tmp_path / 'no'} does not exist" in err
    assert not (tmp_path / "no").exists()


def test_output_file_refuses_a_directory_and_accepts_a_new_file(tmp_path: Path) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is a directory"):
        cli_types.output_file(str(tmp_path))
    assert cli_types.output_file(str(tmp_path / "cm.png")) == tmp_path / "cm.png"


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (cli_types.share, "0", 0.0),
        (cli_types.share, "1", 1.0),
        (cli_types.share, "0.05", 0.05),
        (cli_types.positive_int, "1", 1),
        (cli_types.int_at_least(2), "3", 3),
        (cli_types.positive_float, "0.5", 0.5),
        (cli_types.float_between(0, 1, high_inclusive=False), "0.99", 0.99),
    ],
)
def test_values_in_range_pass_unchanged(parse, text: str, value: float) -> None:
    assert parse(text) == value


#: Numeric options not parsed by ml/cli_types.py, and where they are checked instead.
CHECKED_ELSEWHERE = {
    # every serve flag is validated (range included) by ml.serve.settings.ServeSettings, exit 2
    "serve",
}


def test_every_numeric_option_goes_through_cli_types() -> None:
    """No ``type=int``/``type=float`` left: a plain one accepts nan, 0 and negative values."""
    plain = []
    for command, sub in _subparsers(cli.build_parser()):
        if command.split()[0] in CHECKED_ELSEWHERE:
            continue
        for action in sub._actions:
            if action.type in (int, float):
                plain.append(f"{command} {'/'.join(action.option_strings)}")
    assert plain == []


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix}{name}", sub))
                found.extend(_subparsers(sub, f"{prefix}{name} "))
    return found
