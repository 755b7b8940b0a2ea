"""The refresh job: database → validated, de-duplicated snapshot on a local directory or real S3."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ml import db, snapshots
from ml.cli import main
from ml.errors import ExitCode, NotFoundError
from ml.jobs.refresh import RefreshConfig, refresh, resolve_duplicates


def conflicting(frame: pd.DataFrame) -> pd.DataFrame:
    """The sample plus a 3-row majority conflict and a 2-row even split (text varies in case/punctuation)."""
    base = frame.iloc[0]
    rows = [
        {**base, "id": "dup-1", "description": "widget, blue", "category": "A"},
        {**base, "id": "dup-2", "description": "WIDGET  BLUE", "category": "A"},
        {**base, "id": "dup-3", "description": "Widget Blue", "category": "B"},
        {**base, "id": "tie-1", "description": "gadget", "category": "A"},
        {**base, "id": "tie-2", "description": "GADGET", "category": "B"},
    ]
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def seeded(url: str, frame: pd.DataFrame) -> None:
    engine = db.create_db_engine(url)
    db.init_db(engine)
    db.seed(engine, frame)


def test_majority_wins_and_even_splits_are_left_out(purchases_sample: pd.DataFrame) -> None:
    frame = conflicting(purchases_sample.iloc[:50])
    resolved, report = resolve_duplicates(frame)

    widget = resolved[resolved["id"].str.startswith("dup-")]
    assert widget[["id", "category"]].to_dict("records") == [{"id": "dup-1", "category": "A"}]
    assert not resolved["id"].str.startswith("tie-").any()
    assert report.conflict_groups == 2 and report.majority_groups == 1 and report.tie_groups == 1
    assert report.tie_rows == 2 and report.conflict_rows == 5
    assert report.rows_out == len(resolved)
    assert report.rows_in == report.rows_out + report.duplicates_removed + report.tie_rows
    assert {"A": 2, "B": 1} in [example["labels"] for example in report.examples]
    assert "even splits left out" in report.summary()


def test_refresh_writes_a_complete_snapshot(database_url: str, tmp_path: Path, purchases_sample: pd.DataFrame) -> None:
    frame = conflicting(purchases_sample)
    seeded(database_url, frame)
    store = str(tmp_path / "store")

    result = refresh(RefreshConfig(database_url, store, rows_per_file=1000))

    loaded, manifest = snapshots.load_snapshot(store, "latest")
    assert manifest["snapshot_id"] == result.snapshot_id
    rows = manifest["rows"]
    assert rows["read"] == len(frame) and rows["invalid"] == 0 and rows["ties_left_out"] >= 2
    assert rows["written"] == len(loaded) == rows["read"] - rows["duplicates_removed"] - rows["ties_left_out"]
    assert len(manifest["files"]) == len(list((tmp_path / "store" / "training" / result.snapshot_id).glob("*.parquet")))
    assert len(manifest["files"]) >= 3  # partitioned by Dask
    assert sum(manifest["label_distribution"].values()) == len(loaded)
    assert set(manifest["schema"]) == {"id", "description", "cost", "contract", "department", "category"}
    assert manifest["source"]["query_seconds"] >= 0 and "JOIN labels" in manifest["source"]["query"]
    assert list(loaded.columns) == ["id", "description", "cost", "contract", "department", "category"]
    assert loaded["id"].is_unique


@pytest.mark.slow
def test_refresh_to_s3(sqlite_url: str, s3_bucket_url: str, purchases_sample: pd.DataFrame) -> None:
    seeded(sqlite_url, purchases_sample.iloc[:500])
    store = f"{s3_bucket_url}/ml"
    first = refresh(RefreshConfig(sqlite_url, store, rows_per_file=200))
    second = refresh(RefreshConfig(sqlite_url, store, rows_per_file=200))

    assert snapshots.list_snapshots(store) == sorted([first.snapshot_id, second.snapshot_id])
    loaded, manifest = snapshots.load_snapshot(store, "latest")
    assert manifest["snapshot_id"] == second.snapshot_id and len(loaded) == manifest["rows"]["written"]
    assert len(manifest["files"]) == 3
    older, _ = snapshots.load_snapshot(store, first.snapshot_id)
    pd.testing.assert_frame_equal(older, loaded)


def test_a_snapshot_without_manifest_is_invisible(
    sqlite_url: str, tmp_path: Path, purchases_sample: pd.DataFrame
) -> None:
    seeded(sqlite_url, purchases_sample.iloc[:100])
    store = str(tmp_path / "store")
    done = refresh(RefreshConfig(sqlite_url, store))
    interrupted = tmp_path / "store" / "training" / "29990101T000000Z-ffffff"
    interrupted.mkdir()
    purchases_sample.iloc[:3].to_parquet(interrupted / "part-00000.parquet")

    assert snapshots.resolve_snapshot(store, "latest") == done.snapshot_id
    with pytest.raises(NotFoundError, match="no complete training snapshot"):
        snapshots.load_snapshot(store, interrupted.name)


def test_invalid_rows_are_excluded_and_reported(
    database_url: str, tmp_path: Path, purchases_sample: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    frame = purchases_sample.iloc[:200].copy()
    frame.loc[5, "description"] = ""
    frame.loc[6, "cost"] = -1.0
    frame.loc[7, "category"] = " "
    seeded(database_url, frame)

    result = refresh(RefreshConfig(database_url, str(tmp_path / "store")))

    bad = result.manifest["validation"]["bad"]
    assert bad["description is empty"] == {"count": 1, "ids": [frame.loc[5, "id"]]}
    assert bad["cost is negative"]["ids"] == [frame.loc[6, "id"]]
    assert bad["category is empty"]["ids"] == [frame.loc[7, "id"]]
    assert result.manifest["rows"]["invalid"] == 3
    assert "3 of 200 rows invalid" in caplog.text


def test_too_many_invalid_rows_stop_before_writing(
    sqlite_url: str, tmp_path: Path, purchases_sample: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = purchases_sample.iloc[:100].copy()
    frame.loc[:9, "description"] = ""
    seeded(sqlite_url, frame)
    store = tmp_path / "store"

    code = main(["refresh", "--database-url", sqlite_url, "--store", str(store), "--max-bad-share", "0.05"])

    assert code == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "10 rows: description is empty" in err and "exceeds the limit" in err
    assert not (store / "training").exists()


def test_empty_or_missing_tables_exit_not_found(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    assert main(["refresh", "--database-url", database_url, "--store", store]) == ExitCode.NOT_FOUND
    assert "db init" in capsys.readouterr().err

    db.init_db(db.create_db_engine(database_url))
    assert main(["refresh", "--database-url", database_url, "--store", store]) == ExitCode.NOT_FOUND
    assert "no labelled purchases" in capsys.readouterr().err


def test_missing_snapshot_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="python -m ml refresh"):
        snapshots.load_snapshot(str(tmp_path), "latest")
    with pytest.raises(NotFoundError, match="no complete training snapshot 'nope'"):
        snapshots.load_snapshot(str(tmp_path), "nope")


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in the URL must not leave an empty database (and its directory) behind a failed job."""
    database = tmp_path / "typo" / "purchases.db"
    url = f"sqlite:///{database}"
    for argv in (["refresh"], ["predict", "--dask-timeout", "5"]):
        assert main([*argv, "--database-url", url, "--store", str(tmp_path / "store")]) == ExitCode.NOT_FOUND
        assert f"database file {database} does not exist" in capsys.readouterr().err
    assert not database.parent.exists()
