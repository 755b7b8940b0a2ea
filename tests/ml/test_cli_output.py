"""What the CLI writes: whole identifiers, JSON when asked, files only when asked, quiet closed pipes,
and ``evaluate`` reading its input in chunks with the same result as all at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ml.cli import CLOSED_PIPE_EXIT, main
from ml.errors import ExitCode
from ml.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[2]


def ml(*args: str, cwd: Path = REPO, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "DASK_SCHEDULER_ADDRESS": ""}
    return subprocess.run(
        [sys.executable, "-m", "ml", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.fixture
def store(store_with_model: Callable[..., ModelRegistry]) -> ModelRegistry:
    return store_with_model(macro_f1=0.5)


def test_models_list_prints_whole_versions_in_80_columns(store: ModelRegistry) -> None:
    version = store.latest_version()
    assert version
    result = ml("models", "list", "--store", store.store, columns=80)
    assert result.returncode == 0, result.stderr
    assert version in result.stdout and "LATEST" in result.stdout


def test_models_show_prints_json_only_with_json(store: ModelRegistry) -> None:
    as_json = ml("models", "show", "--store", store.store, "--json")
    assert json.loads(as_json.stdout)["version"] == store.latest_version()
    readable = ml("models", "show", "--store", store.store)
    assert readable.returncode == 0, readable.stderr
    assert f"version: {store.latest_version()}" in readable.stdout and "metrics.macro_f1: 0.5" in readable.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(readable.stdout)


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "list"],
        ["models", "show", "--json"],
        ["models", "list", "--json"],
        ["--help"],
    ],
    ids=" ".join,
)
def test_a_closed_pipe_ends_quietly(store: ModelRegistry, argv: list[str]) -> None:
    """``python -m ml models list | head -1``: the reader is gone before the first write."""
    args = [*argv, "--store", store.store] if argv[0] == "models" else argv
    process = subprocess.Popen(
        [sys.executable, "-m", "ml", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )
    assert process.stdout and process.stderr
    process.stdout.close()
    stderr = process.stderr.read().decode()
    # quiet whoever notices first: our handler (exit 141, as SIGPIPE would), rich's (exit 1) or argparse
    assert process.wait(timeout=120) in {CLOSED_PIPE_EXIT, 1, 0}
    assert stderr == ""


def test_evaluate_writes_a_plot_only_when_asked(store: ModelRegistry, sample_csv: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = ml("evaluate", "--model", store.store, "--data", str(sample_csv), "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert list(workdir.iterdir()) == []
    plotted = ml(
        "evaluate", "--model", store.store, "--data", str(sample_csv), "--plot", str(workdir / "cm.png"), cwd=workdir
    )
    assert plotted.returncode == 0, plotted.stderr
    assert (workdir / "cm.png").stat().st_size > 10_000 and f"confusion matrix: {workdir / 'cm.png'}" in plotted.stdout


def test_evaluate_in_chunks_scores_like_all_at_once(
    store: ModelRegistry, purchases_sample: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = purchases_sample.iloc[:1000].copy()
    frame.loc[700, "id"] = frame.loc[100, "id"]  # a duplicate id in another chunk
    frame.loc[5, "cost"] = -1
    csv, parquet = tmp_path / "d.csv", tmp_path / "d.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    scores = []
    for data, chunk_rows in ((csv, 10_000), (csv, 64), (parquet, 64)):
        argv = ["evaluate", "--model", store.store, "--data", str(data), "--json", "--chunk-rows", str(chunk_rows)]
        assert main(argv) == ExitCode.OK
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0]["n_rows"] == 998  # the negative cost and the second use of the id left out
    assert scores[0] == scores[1] == scores[2]

    refused = main(
        ["evaluate", "--model", store.store, "--data", str(csv), "--chunk-rows", "64", "--max-bad-share", "0"]
    )
    assert refused == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "1 rows: id is duplicated" in err and "1 rows: cost is negative" in err
