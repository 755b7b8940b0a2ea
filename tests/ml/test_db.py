"""The database layer on real engines: SQLite files and a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ml import db
from ml.cli import main
from ml.errors import BadInputError, ExitCode, InfrastructureError, NotFoundError
from tests.support.ports import free_port


def test_seed_loads_purchases_and_labels_and_is_repeatable(database_url: str, purchases_sample: pd.DataFrame) -> None:
    engine = db.create_db_engine(database_url)
    db.init_db(engine)

    first = db.seed(engine, purchases_sample, unlabeled_share=0.2)
    again = db.seed(engine, purchases_sample)

    assert first["purchases"] == len(purchases_sample)
    assert 0.7 * len(purchases_sample) < first["labels"] < 0.9 * len(purchases_sample)
    assert again == {"purchases": 0, "labels": 0, "skipped_existing": len(purchases_sample)}
    assert db.table_counts(engine) == {"purchases": 3000, "labels": first["labels"], "predictions": 0}
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.purchases).where(db.purchases.c.id == purchases_sample["id"][0])).one()
    assert row.description == purchases_sample["description"][0]


def test_seed_keeps_bad_rows_as_the_application_would(sqlite_url: str, purchases_sample: pd.DataFrame) -> None:
    frame = purchases_sample.iloc[:5].copy()
    frame.loc[0, "description"] = pd.NA
    frame.loc[1, "cost"] = float("nan")
    engine = db.create_db_engine(sqlite_url)
    db.init_db(engine)
    db.seed(engine, frame)
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(db.purchases))}
    assert rows[frame.loc[0, "id"]].description is None
    assert rows[frame.loc[1, "id"]].cost is None


def test_seed_refuses_unusable_ids(sqlite_url: str, purchases_sample: pd.DataFrame) -> None:
    frame = pd.concat([purchases_sample.iloc[:3], purchases_sample.iloc[:1]], ignore_index=True)
    engine = db.create_db_engine(sqlite_url)
    db.init_db(engine)
    with pytest.raises(BadInputError, match="1 duplicated ids"):
        db.seed(engine, frame)


def test_uninitialised_database_names_the_command_to_run(sqlite_url: str) -> None:
    with pytest.raises(NotFoundError, match="python -m ml db init"):
        db.require_tables(db.create_db_engine(sqlite_url), "purchases")


def test_unreachable_database_is_an_infrastructure_error() -> None:
    engine = db.create_db_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x?connect_timeout=3")
    with pytest.raises(InfrastructureError, match="database postgresql"):
        db.require_tables(engine, "purchases")


def test_bad_url_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="not a database URL"):
        db.create_db_engine("not a url")


def test_cli_init_and_seed(tmp_path: Path, purchases_sample: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'p.db'}"
    data = tmp_path / "sample.csv"
    purchases_sample.iloc[:100].to_csv(data, index=False)

    assert main(["db", "init", "--database-url", url]) == ExitCode.OK
    assert main(["db", "seed", "--data", str(data), "--database-url", url, "--unlabeled-share", "0.5"]) == 0
    assert "100 purchases" in capsys.readouterr().out
    assert main(["db", "seed", "--data", str(tmp_path / "missing.csv"), "--database-url", url]) == ExitCode.BAD_INPUT


def test_cli_seed_reads_a_windows_1252_export_with_encoding(tmp_path: Path, purchases_sample: pd.DataFrame) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    data = tmp_path / "export.csv"
    sample = purchases_sample.iloc[:20].copy()
    sample.loc[sample.index[0], "description"] = "PLATE Ø3.5 – LOCKING"
    sample.to_csv(data, index=False, encoding="cp1252")

    assert main(["db", "seed", "--data", str(data), "--database-url", url]) == ExitCode.BAD_INPUT
    assert main(["db", "seed", "--data", str(data), "--database-url", url, "--encoding", "cp1252"]) == ExitCode.OK
    with db.create_db_engine(url).connect() as connection:
        query = sa.text("SELECT description FROM purchases WHERE id = :id")
        stored = connection.execute(query, {"id": sample.iloc[0]["id"]})
        assert stored.scalar_one() == "PLATE Ø3.5 – LOCKING"


def test_seed_refuses_costs_that_are_not_numbers(
    sqlite_url: str, purchases_sample: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cost of ``abc`` cannot be stored in the number column; loading it as NULL would make it valid."""
    frame = purchases_sample.iloc[:5].copy()
    frame["cost"] = frame["cost"].astype(object)
    frame.loc[2, "cost"] = "abc"
    frame.loc[3, "cost"] = " 12,50 "
    engine = db.create_db_engine(sqlite_url)
    db.init_db(engine)
    with pytest.raises(BadInputError, match=rf"2 rows whose cost is not a number \(ids: {frame.loc[2, 'id']}, "):
        db.seed(engine, frame)
    assert db.table_counts(engine)["purchases"] == 0

    path = tmp_path / "bad_cost.csv"
    frame.to_csv(path, index=False)
    assert main(["db", "seed", "--data", str(path), "--database-url", sqlite_url]) == ExitCode.BAD_INPUT
    assert "cost is not a number" in capsys.readouterr().err
    assert db.table_counts(engine)["purchases"] == 0
