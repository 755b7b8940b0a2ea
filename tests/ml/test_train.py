"""The training job end to end: CLI in a subprocess, a real multi-process Dask cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pandas as pd
import pytest
from distributed import Client, get_task_stream

from ml import schema
from ml.errors import BadInputError, ExitCode
from ml.features import is_validation
from ml.jobs.train import ROWS_KEY, rows_fingerprint, search
from ml.model import fit_model
from ml.registry import HASH_SPLIT_ESTIMATE, ModelRegistry

pytestmark = pytest.mark.slow


def ml(*args: str, scheduler: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": scheduler or ""}
    return subprocess.run([sys.executable, "-m", "ml", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_train_with_search_on_dask_registers_and_promotes(dask_processes, sample_csv: Path, tmp_path: Path) -> None:
    dask_processes.start(n_workers=2)
    store = str(tmp_path / "store")
    result = ml("train", "--data", str(sample_csv), "--store", store, "--search", scheduler=dask_processes.address)
    assert result.returncode == ExitCode.OK, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["promoted"] and summary["macro_f1"] > 0.5
    registry = ModelRegistry(store)
    assert registry.latest_version() == summary["version"]
    meta = registry.metadata()
    assert meta["data"]["rows"] == meta["data"]["train_rows"] == 3000  # the registered model saw every row
    assert meta["data"]["estimate_rows"] + meta["data"]["validation_rows"] == 3000
    assert meta["metrics"]["estimate"] == HASH_SPLIT_ESTIMATE
    assert len(meta["search"]) == 4 and meta["params"]
    assert meta["libraries"]["scikit-learn"] and meta["sha256"]
    assert "searching 4 candidates × 3 folds on Dask (budget 600s)" in result.stderr
    assert "candidate 4/4" in result.stderr  # each candidate reported as its folds finish

    evaluated = ml(
        "evaluate", "--model", store, "--data", str(sample_csv), "--json", "--plot", str(tmp_path / "cm.png")
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert set(metrics) == {"accuracy", "macro_f1", "n_rows", "per_class", "at_threshold", "curve", "reliability"}
    assert metrics["at_threshold"]["threshold"] == meta["review_threshold"]
    assert metrics["n_rows"] == 3000 and (tmp_path / "cm.png").stat().st_size > 10_000

    listed = ml("models", "list", "--store", store, "--json")
    assert [entry["latest"] for entry in json.loads(listed.stdout)] == [True]
    shown = ml("models", "show", "--store", store, "--json")
    assert json.loads(shown.stdout)["version"] == summary["version"]


def _latest(registry: ModelRegistry, pipeline, macro_f1: float, **extra) -> str:
    metrics = {"accuracy": 0.9, "macro_f1": macro_f1, "n_rows": 1, **extra.pop("metrics", {})}
    version = registry.save(pipeline, {"metrics": metrics, **extra})
    registry.promote(version)
    return version


def test_gate_rejects_worse_model_and_keeps_latest(trained_model, sample_csv: Path, tmp_path: Path) -> None:
    """LATEST estimated on the same validation rows: the recorded figures are compared."""
    frame, _ = schema.clean(schema.read_records(str(sample_csv)), labeled=True, max_bad_share=0.05)
    same_rows = rows_fingerprint(frame[is_validation(frame[schema.DESCRIPTION])])
    registry = ModelRegistry(str(tmp_path / "store"))
    before = _latest(registry, trained_model.pipeline, 0.999, metrics={ROWS_KEY: same_rows})
    result = ml("train", "--data", str(sample_csv), "--store", str(tmp_path / "store"))
    assert result.returncode == ExitCode.GATE_REJECTED, result.stderr
    assert "stored but not promoted" in result.stderr and f"vs LATEST {before} 0.9990" in result.stderr
    assert registry.latest_version() == before
    assert len(registry.versions()) == 2


def test_gate_remakes_an_estimate_made_on_other_rows(trained_model, sample_csv: Path, tmp_path: Path) -> None:
    """A LATEST estimated on other rows (a de-duplicated snapshot, another file) is re-estimated on these.

    Its recorded 0.999 is not comparable; its parameters fitted and scored on this run's split are.
    """
    registry = ModelRegistry(str(tmp_path / "store"))
    worse = _latest(registry, trained_model.pipeline, 0.999, params={"classifier__C": 0.0001})
    result = ml("train", "--data", str(sample_csv), "--store", str(tmp_path / "store"))
    assert result.returncode == ExitCode.OK, result.stderr
    assert f"re-estimating LATEST {worse}'s parameters on the same" in _one_line(result.stderr)
    gate = json.loads(result.stdout.strip().splitlines()[-1])["gate"]
    assert f"of LATEST {worse}'s parameters on the same" in gate and "its recorded 0.9990" in gate

    # the same parameters on the same rows are the same estimate: nothing to fit again
    same = _latest(registry, trained_model.pipeline, 0.999)
    result = ml("train", "--data", str(sample_csv), "--store", str(tmp_path / "store"))
    assert result.returncode == ExitCode.OK, result.stderr
    assert "re-estimating" not in result.stderr and f"LATEST {same}'s parameters" in _one_line(result.stderr)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_bad_rows_are_reported_and_refused(purchases_sample: pd.DataFrame, tmp_path: Path) -> None:
    bad = purchases_sample.copy()
    bad.loc[:199, "cost"] = -5
    bad.loc[200:209, "description"] = ""
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    result = ml("train", "--data", str(path), "--store", str(tmp_path / "store"), "--no-search")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "210 of 3000 rows invalid" in result.stderr
    assert "200 rows: cost is negative" in result.stderr and "10 rows: description is empty" in result.stderr
    assert "exceeds the limit 5.0%" in result.stderr
    assert not (tmp_path / "store").exists()


def test_unreachable_scheduler_fails_fast(sample_csv: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    result = ml(
        "train",
        "--data",
        str(sample_csv),
        "--store",
        str(tmp_path / "s"),
        "--dask-timeout",
        "3",
        scheduler="tcp://127.0.0.1:9",
        timeout=120,
    )
    assert result.returncode == ExitCode.INFRASTRUCTURE
    assert "tcp://127.0.0.1:9 is unreachable" in result.stderr
    assert time.monotonic() - started < 60


def test_dask_gets_whole_fits_and_svm_blocks_never_preprocessing_steps(
    dask_processes, purchases_sample: pd.DataFrame
) -> None:
    """joblib's Dask backend sends every nested ``Parallel`` call to the cluster whatever its n_jobs;
    the column transformer's steps must stay inside the fit that needs them, not become tasks."""
    dask_processes.start(n_workers=2)  # with one worker thread in all, joblib would not use Dask at all
    with Client(dask_processes.address) as client, get_task_stream(client) as stream:
        search(client, purchases_sample, folds=2)
        with joblib.parallel_backend("dask", client=client):
            fit_model(purchases_sample, n_jobs=-1)
    # joblib names a task after the function it batches: batch_of_<function>_<n>_calls-<token>;
    # the search submits its own tasks, named <function>-<token>
    keys = [task["key"] for task in stream.data]
    batched = [re.fullmatch(r"batch_of_(\w+?)_\d+_calls-\w+", key) for key in keys]
    functions = {match.group(1) if match else key.split("-", 1)[0] for match, key in zip(batched, keys, strict=True)}
    assert functions == {"fold_score", "fit_one_vs_rest_block"}


def test_search_stops_at_its_budget(dask_processes, purchases_sample: pd.DataFrame) -> None:
    dask_processes.start(n_workers=1)
    with (
        Client(dask_processes.address) as client,
        pytest.raises(BadInputError, match="budget of 0s ended before any candidate"),
    ):
        search(client, purchases_sample, folds=2, budget=0.01)


def test_version_mismatch_on_a_worker_is_refused(dask_processes, sample_csv: Path, tmp_path: Path) -> None:
    preload = tmp_path / "other_sklearn.py"
    preload.write_text(
        "from importlib import metadata\n"
        "_real = getattr(metadata.version, '_real', metadata.version)\n"
        "def version(name):\n"
        "    return '0.0.0-other' if name == 'scikit-learn' else _real(name)\n"
        "version._real = _real\n"
        "metadata.version = version\n"
    )
    dask_processes.start(n_workers=1, preload=preload)
    result = ml("train", "--data", str(sample_csv), "--store", str(tmp_path / "s"), scheduler=dask_processes.address)
    assert result.returncode == ExitCode.INFRASTRUCTURE
    assert "versions differ" in result.stderr and "scikit-learn: client" in result.stderr
    assert "0.0.0-other" in result.stderr


def test_worker_killed_during_training(dask_processes, store_with_model, full_data, tmp_path: Path) -> None:
    """Either Dask reschedules and training completes, or it fails clearly and LATEST is unchanged."""
    dask_processes.start(n_workers=2)
    registry = store_with_model(macro_f1=0.0)
    before = registry.latest_version()
    data = tmp_path / "big.csv"
    full_data.sample(12_000, random_state=1).to_csv(data, index=False)
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": dask_processes.address}
    job = subprocess.Popen(
        [sys.executable, "-m", "ml", "train", "--data", str(data), "--store", str(tmp_path / "store")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    with Client(dask_processes.address) as client:
        deadline = time.monotonic() + 120
        while not any(client.processing().values()):
            assert time.monotonic() < deadline and job.poll() is None, "training never started work"
            time.sleep(0.2)
    time.sleep(1.0)
    dask_processes.workers[0].send_signal(signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=600)
    if job.returncode == ExitCode.OK:
        assert registry.latest_version() == json.loads(stdout.strip().splitlines()[-1])["version"] != before
    else:
        assert job.returncode == ExitCode.INFRASTRUCTURE, stderr
        assert "Dask failed during training" in stderr
        assert registry.latest_version() == before
