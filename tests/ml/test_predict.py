"""The predict job against real databases (SQLite, PostgreSQL) on a real multi-process Dask cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from ml import db
from ml.cli import main
from ml.errors import BadInputError, ExitCode, NotFoundError
from ml.jobs.predict import PredictConfig, id_ranges, run_predict
from tests.conftest import ROOT, TrainedModel
from tests.support.dask_processes import DaskProcesses
from tests.support.ports import free_port


def seeded(url: str, frame: pd.DataFrame) -> sa.Engine:
    engine = db.create_db_engine(url)
    db.init_db(engine)
    db.seed(engine, frame)
    return engine


def config(url: str, model: TrainedModel, address: str, **overrides: Any) -> PredictConfig:
    return PredictConfig(
        database_url=url,
        store=model.store,
        model_name=model.name,
        scheduler=address,
        partition_rows=700,
        write_chunk_rows=300,
        **overrides,
    )


def duplicates(engine: sa.Engine) -> int:
    p = db.predictions
    query = (
        sa.select(p.c.purchase_id).group_by(p.c.purchase_id, p.c.model_version).having(sa.func.count() > 1).subquery()
    )
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(query)) or 0)


def predictions_frame(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(db.predictions), conn)


def test_id_ranges_bound_partition_size() -> None:
    assert id_ranges(1, 10, 4) == [(1, 5), (5, 9), (9, 11)]
    assert id_ranges(7, 7, 100) == [(7, 8)]


@pytest.mark.slow
def test_predicts_every_purchase_once_and_reruns_add_nothing(
    database_url: str, trained_model: TrainedModel, dask_address: str, purchases_sample: pd.DataFrame
) -> None:
    engine = seeded(database_url, purchases_sample)

    summary = run_predict(config(database_url, trained_model, dask_address, review_threshold=0.6))

    assert summary.model_version == trained_model.version
    assert summary.predicted == summary.pending == len(purchases_sample)
    assert summary.partitions == 5  # 3,000 row ids in ranges of 700
    written = predictions_frame(engine)
    assert len(written) == len(purchases_sample) and duplicates(engine) == 0
    assert set(written["purchase_id"]) == set(purchases_sample["id"])
    assert written["top_categories"].map(len).eq(3).all()
    assert (written["top_categories"].str[0] == written["category"]).all()
    assert (written["needs_review"] == (written["confidence"] < 0.6)).all()
    assert summary.flagged == int(written["needs_review"].sum())
    assert sum(summary.categories.values()) == len(purchases_sample)
    # the tiny model must have learnt something: most predictions agree with the expert labels
    truth = purchases_sample.set_index("id")["category"]
    predicted = written.set_index("purchase_id")["category"].astype(str)
    assert (predicted == truth.astype(str).reindex(predicted.index)).mean() > 0.7

    again = run_predict(config(database_url, trained_model, dask_address))
    assert again.pending == 0 and again.predicted == 0
    assert "nothing to predict" in again.lines()[0]

    everything = run_predict(config(database_url, trained_model, dask_address, predict_all=True))
    assert everything.predicted == len(purchases_sample)
    assert len(predictions_frame(engine)) == len(purchases_sample) and duplicates(engine) == 0


@pytest.mark.slow
def test_new_purchases_only_are_predicted(
    sqlite_url: str, trained_model: TrainedModel, dask_address: str, purchases_sample: pd.DataFrame
) -> None:
    engine = seeded(sqlite_url, purchases_sample.iloc[:1000])
    run_predict(config(sqlite_url, trained_model, dask_address))
    db.seed(engine, purchases_sample.iloc[1000:1500])

    summary = run_predict(config(sqlite_url, trained_model, dask_address))

    assert summary.pending == summary.predicted == 500
    assert len(predictions_frame(engine)) == 1500 and duplicates(engine) == 0


@pytest.mark.slow
def test_invalid_purchases_are_reported_not_predicted(
    database_url: str, trained_model: TrainedModel, dask_address: str, purchases_sample: pd.DataFrame
) -> None:
    frame = purchases_sample.iloc[:400].copy()
    frame.loc[3, "description"] = "   "
    frame.loc[7, "cost"] = -5.0
    engine = seeded(database_url, frame)

    summary = run_predict(config(database_url, trained_model, dask_address))

    assert summary.invalid == 2 and summary.predicted == 398
    assert summary.bad["description is empty"][1] == [frame.loc[3, "id"]]
    assert summary.bad["cost is negative"][1] == [frame.loc[7, "id"]]
    assert any("invalid, not predicted: 2" in line for line in summary.lines())
    assert frame.loc[3, "id"] not in set(predictions_frame(engine)["purchase_id"])

    with pytest.raises(BadInputError, match="exceeds --max-bad-share"):  # still pending: checked again
        run_predict(config(database_url, trained_model, dask_address, max_bad_share=0.0))


def test_missing_latest_model_exits_not_found(
    sqlite_url: str, tmp_path: Path, purchases_sample: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded(sqlite_url, purchases_sample.iloc[:10])
    code = main(["predict", "--database-url", sqlite_url, "--store", str(tmp_path / "empty-store")])
    assert code == ExitCode.NOT_FOUND
    assert "no LATEST model" in capsys.readouterr().err


def test_empty_purchases_table_exits_not_found(
    database_url: str, trained_model: TrainedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    db.init_db(db.create_db_engine(database_url))
    code = main(["predict", "--database-url", database_url, "--store", trained_model.store])
    assert code == ExitCode.NOT_FOUND
    err = capsys.readouterr().err
    assert "purchases table" in err and "is empty" in err


def test_uninitialised_database_exits_not_found(sqlite_url: str, trained_model: TrainedModel) -> None:
    with pytest.raises(NotFoundError, match="db init"):
        run_predict(PredictConfig(sqlite_url, trained_model.store, trained_model.name))


@pytest.mark.slow
def test_unreachable_scheduler_fails_fast_with_infrastructure_code(
    sqlite_url: str, trained_model: TrainedModel, purchases_sample: pd.DataFrame
) -> None:
    seeded(sqlite_url, purchases_sample.iloc[:50])
    nobody = f"tcp://127.0.0.1:{free_port()}"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "ml",
            "predict",
            "--database-url",
            sqlite_url,
            "--store",
            trained_model.store,
            "--scheduler",
            nobody,
            "--dask-timeout",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,  # a hang fails the test instead of blocking the suite
    )
    assert process.returncode == ExitCode.INFRASTRUCTURE, process.stderr
    assert "unreachable" in process.stderr and nobody in process.stderr


@pytest.mark.slow
def test_worker_killed_mid_run_then_rerun_completes_without_duplicates(
    postgres_url: str, trained_model: TrainedModel, purchases_sample: pd.DataFrame, tmp_path: Path
) -> None:
    frame = pd.concat([purchases_sample, purchases_sample.assign(id=purchases_sample["id"] + "-b")], ignore_index=True)
    engine = seeded(postgres_url, frame)
    cluster = DaskProcesses(tmp_path).start(n_workers=2)
    try:
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ml",
                "predict",
                "--database-url",
                postgres_url,
                "--store",
                trained_model.store,
                "--scheduler",
                cluster.address,
                "--partition-rows",
                "200",
                "--write-chunk-rows",
                "100",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 240
        while len(predictions_frame(engine)) == 0 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        victim = cluster.workers[0]
        os.kill(victim.pid, signal.SIGKILL)  # mid-run: some partitions written, others in flight
        _, err = run.communicate(timeout=300)
        assert run.returncode in (ExitCode.OK, ExitCode.INFRASTRUCTURE), err
        if run.returncode:
            assert "Dask" in err, err  # a clear message, not a traceback
        assert duplicates(engine) == 0

        # the CronJob's next run finishes whatever is left, on the surviving worker
        rerun = run_predict(
            PredictConfig(
                postgres_url, trained_model.store, trained_model.name, scheduler=cluster.address, partition_rows=500
            )
        )
        assert rerun.predicted == rerun.pending
        written = predictions_frame(engine)
        assert len(written) == len(frame) and duplicates(engine) == 0
        assert set(written["purchase_id"]) == set(frame["id"])
    finally:
        cluster.stop()
