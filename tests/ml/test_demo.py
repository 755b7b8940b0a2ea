"""The demo's batch flow end to end (small data, the session's Dask cluster, a temporary workdir)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ml import db
from ml.cli import main


@pytest.mark.slow
def test_demo_runs_the_batch_flow_and_says_where_results_are(
    tmp_path: Path, purchases_sample: pd.DataFrame, dask_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "sample.csv"
    purchases_sample.iloc[:1500].to_csv(data, index=False)
    workdir = tmp_path / ("a-long-directory-name-" * 4) / "demo"  # printed whole, whatever its length

    code = main(["demo", "--data", str(data), "--workdir", str(workdir), "--scheduler", dask_address])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "rows predicted: 1,500" in out
    assert "flagged for review" in out and "agreement with the experts" in out
    assert "table 'predictions'" in out and str(workdir / "purchases.db") in out
    engine = db.create_db_engine(f"sqlite:///{workdir / 'purchases.db'}")
    assert db.table_counts(engine)["predictions"] == 1500
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count(sa.distinct(db.predictions.c.model_version)))) == 1

    assert main(["demo", "--data", str(data), "--workdir", str(workdir), "--scheduler", dask_address]) == 0
    assert db.table_counts(engine)["predictions"] == 1500  # a second run starts from scratch
