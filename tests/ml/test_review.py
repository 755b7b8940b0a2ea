"""The review loop: queue order, imports refused for each kind of bad file, and the whole loop end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ml import db, review
from ml.cli import main
from ml.errors import BadInputError, ExitCode, NotFoundError
from ml.features import normalise_column
from ml.snapshots import load_snapshot


def purchases(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(n)],
            "description": [f"ITEM {i}" for i in range(n)],
            "cost": [1.0] * n,
            "contract": [""] * n,
            "department": ["A"] * n,
            "category": ["Sutures", "Gloves", "Sutures", "Gloves", "Sutures", "Gloves"][:n],
        }
    )


@pytest.fixture
def engine(sqlite_url: str) -> sa.Engine:
    """p0, p1 labelled (Sutures, Gloves); p2..p5 not."""
    engine = db.create_db_engine(sqlite_url)
    db.init_db(engine)
    frame = purchases()
    db.seed(engine, frame.iloc[:2])
    db.seed(engine, frame.iloc[2:].drop(columns="category"))
    return engine


def labels(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {
            pid: category for pid, category in conn.execute(sa.select(db.labels.c.purchase_id, db.labels.c.category))
        }


def review_file(tmp_path: Path, rows: list[tuple[str, str]], **extra: list[str]) -> str:
    path = tmp_path / "review.csv"
    frame = pd.DataFrame(rows, columns=[review.PURCHASE_COLUMN, review.EXPERT_COLUMN])
    for column, values in extra.items():
        frame[column] = values
    frame.to_csv(path, index=False)
    return str(path)


def import_file(engine: sa.Engine, path: str, overwrite: bool = False) -> review.ImportResult:
    choices, skipped = review.read_choices(path)
    return review.import_labels(engine, choices, labeled_by="expert", overwrite=overwrite, skipped_empty=skipped)


def test_queue_puts_uncertain_descriptions_shared_by_many_lines_first() -> None:
    flagged = pd.DataFrame(
        {
            "purchase_id": ["a1", "a2", "a3", "b1", "c1"],
            "description": ["GLOVE NITRILE", "glove  nitrile", "GLOVE NITRILE", "ODD THING", "OTHER THING"],
            "cost": 1.0,
            "contract": "",
            "department": "A",
            "category": ["Gloves", "Gloves", "Gloves", "Sutures", "Sutures"],
            "confidence": [0.6, 0.6, 0.6, 0.2, 0.45],
            "top_categories": [["Gloves", "Sutures", "Gowns"]] * 5,
            "top_probabilities": [[0.6, 0.3, 0.1]] * 5,
        }
    )
    queue = review.review_queue(flagged)
    # 3 lines x 0.4 uncertainty = 1.2 beats 1 x 0.8 and 1 x 0.55; one row per normalised description
    assert queue["purchase_id"].tolist() == ["a1", "b1", "c1"]
    assert queue["lines"].tolist() == [3, 1, 1]
    assert queue["priority"].tolist() == pytest.approx([1.2, 0.8, 0.55])
    assert queue.loc[0, ["top1", "p1", "top3", "p3"]].tolist() == ["Gloves", 0.6, "Gowns", 0.1]
    assert (queue[review.EXPERT_COLUMN] == "").all()


def test_good_import_stores_labels_and_skips_empty_rows(engine: sa.Engine, tmp_path: Path) -> None:
    result = import_file(engine, review_file(tmp_path, [("p2", "Sutures"), ("p3", ""), ("p4", " Gloves ")]))
    assert (result.inserted, result.overwritten, result.skipped_empty) == (2, 0, 1)
    assert labels(engine) == {"p0": "Sutures", "p1": "Gloves", "p2": "Sutures", "p4": "Gloves"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("p2", "Sutures"), ("p9", "Gloves")], "unknown purchases (not in the purchases table): 'p9'"),
        ([("p2", "Suture")], "unknown categories (no label uses them): 'Suture' (did you mean 'Sutures'?)"),
        ([("p2", "Sutures"), ("p2", "Gloves")], "purchases chosen for more than once: 'p2'"),
        ([("p2", "Gloves"), ("p0", "Gloves")], "already have a label: 'p0'; pass --overwrite"),
        ([("", "Gloves")], "1 rows have an expert_category but no purchase_id"),
    ],
)
def test_bad_imports_are_refused_whole(engine: sa.Engine, tmp_path: Path, rows: list, message: str) -> None:
    before = labels(engine)
    with pytest.raises(BadInputError, match="nothing imported") as refused:
        import_file(engine, review_file(tmp_path, rows))
    assert message in str(refused.value)
    assert labels(engine) == before  # the good rows of a bad file are not written either


def test_overwrite_replaces_an_existing_label_only_when_asked(engine: sa.Engine, tmp_path: Path) -> None:
    path = review_file(tmp_path, [("p0", "Gloves"), ("p2", "Sutures")])
    result = import_file(engine, path, overwrite=True)
    assert (result.inserted, result.overwritten) == (1, 1)
    assert labels(engine)["p0"] == "Gloves"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("purchase_id,category\np2,Sutures\n", r"no column\(s\) expert_category"),
        ("purchase_id,expert_category\np2,\n", "no row has an expert_category"),
        (b"purchase_id,expert_category\np2,Sut\xe9res\n", "cannot read review file"),
    ],
)
def test_unreadable_review_files_are_refused(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "review.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BadInputError, match=message):
        review.read_choices(str(path))


def test_too_many_rows_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(review, "MAX_IMPORT_ROWS", 2)
    with pytest.raises(BadInputError, match="more than 2 rows"):
        review.read_choices(review_file(tmp_path, [("p2", "A"), ("p3", "B"), ("p4", "C")]))


def test_export_without_flagged_predictions_says_what_to_run(engine: sa.Engine) -> None:
    with pytest.raises(NotFoundError, match="run `python -m ml predict` first"):
        review.export_queue(engine, "v1")


def test_export_leaves_out_lines_labelled_since_the_prediction(engine: sa.Engine) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "purchase_id": pid,
            "model_version": "v1",
            "category": "Sutures",
            "confidence": 0.4,
            "top_categories": ["Sutures", "Gloves"],
            "top_probabilities": [0.4, 0.35],
            "needs_review": True,
            "predicted_at": now,
        }
        for pid in ("p0", "p2", "p3")
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(db.predictions), rows)
    queue = review.export_queue(engine, "v1")
    assert sorted(queue["purchase_id"]) == ["p2", "p3"]  # p0 has a label
    assert queue.loc[0, "top3"] == "" and pd.isna(queue.loc[0, "p3"])  # two classes only


# -- the loop end to end ------------------------------------------------------------------------------


def ml(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run a command as the CLI does, in this process (the machine's cores go to the work, not to imports)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_export_edit_import_refresh_train(
    sqlite_url: str,
    purchases_sample: pd.DataFrame,
    tmp_path: Path,
    dask_address: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The review loop on the embedded defaults: SQLite, a local store, a local Dask cluster."""
    data, store = tmp_path / "purchases.csv", str(tmp_path / "store")
    purchases_sample.to_csv(data, index=False)
    steps = [
        ("db", "seed", "--data", str(data), "--database-url", sqlite_url, "--unlabeled-share", "0.3"),
        ("refresh", "--database-url", sqlite_url, "--store", store),
        ("train", "--snapshot", "latest", "--store", store, "--scheduler", dask_address),
        ("predict", "--database-url", sqlite_url, "--store", store, "--scheduler", dask_address),
    ]
    for step in steps:
        code, out, err = ml(capsys, *step)
        assert code == ExitCode.OK, (step, err)
    assert "from the model's metadata for target accuracy 0.95" in out  # predict says which threshold
    engine = db.create_db_engine(sqlite_url)
    labelled_before = set(labels(engine))

    queue_path = tmp_path / "queue.csv"
    code, out, err = ml(
        capsys, "review", "export", "--database-url", sqlite_url, "--store", store, "--out", str(queue_path)
    )
    assert code == ExitCode.OK, err
    queue = pd.read_csv(queue_path, dtype={"purchase_id": str}, keep_default_na=False)
    assert len(queue) > 20 and queue["priority"].is_monotonic_decreasing
    assert not set(queue["purchase_id"]) & labelled_before

    # the experts: the 20 first lines get their true category (the sample knows it)
    truth = purchases_sample.set_index("id")["category"]
    queue.loc[:19, review.EXPERT_COLUMN] = truth[queue.loc[:19, "purchase_id"]].to_numpy()
    queue.to_csv(queue_path, index=False)
    code, out, err = ml(capsys, "review", "import", "--database-url", sqlite_url, "--file", str(queue_path))
    assert code == ExitCode.OK, err
    assert "imported 20 labels" in out
    code, out, err = ml(capsys, "review", "import", "--database-url", sqlite_url, "--file", str(queue_path))
    assert code == ExitCode.BAD_INPUT and "already have a label" in err

    code, out, err = ml(capsys, "refresh", "--database-url", sqlite_url, "--store", store)
    assert code == ExitCode.OK, err
    snapshot, manifest = load_snapshot(store, "latest")
    assert manifest["rows"]["read"] == len(labelled_before) + 20
    chosen = queue.loc[:19].set_index("purchase_id")[review.EXPERT_COLUMN]
    # an imported line is in the snapshot unless an older label of the same text stood for it
    keys = normalise_column(snapshot["description"])
    in_snapshot = snapshot.assign(_key=keys).set_index("id")
    for pid, category in chosen.items():
        if pid in in_snapshot.index:
            assert in_snapshot.loc[pid, "category"] == category
    assert chosen.index.isin(in_snapshot.index).sum() >= 10

    code, out, err = ml(capsys, "train", "--snapshot", "latest", "--store", store, "--scheduler", dask_address)
    assert code == ExitCode.OK, err
    result = json.loads(out.strip().splitlines()[-1])
    meta = json.loads(
        (Path(store) / "models" / "purchase-classifier" / result["version"] / "metadata.json").read_text()
    )
    assert meta["data"]["snapshot"] == manifest["snapshot_id"] and meta["data"]["rows"] == manifest["rows"]["written"]
