"""The application's database as the batch jobs see it: purchases, expert labels, batch predictions.

The same tables work on SQLite (the embedded default, one file) and PostgreSQL (production); the
URL is the only difference. ``python -m ml db init`` creates them and ``python -m ml db seed`` loads a
purchases file so a newcomer can run refresh and predict without the real application.

Why the columns are as they are:

- ``purchases.row_id`` is an integer surrogate key. The predict job splits the table into id
  *ranges* of at most N rows, so a partition's size is bounded whatever the table holds; the
  application's own id (``purchases.id``, a string) cannot be range-split evenly.
- ``labels`` has one row per purchase: an expert's current decision. Disagreements *between
  purchases* (same text, different labels) are resolved by the refresh job, where they are reported.
- ``predictions`` is unique on ``(purchase_id, model_version)``: whatever happens to a run (killed,
  retried by Dask, re-run by a CronJob) a model version has at most one prediction per purchase.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from ml import schema
from ml.cli_types import share
from ml.errors import BadInputError, InfrastructureError, NotFoundError
from ml.settings import add_database_argument

log = logging.getLogger(__name__)

#: BIGINT in PostgreSQL; SQLite only auto-increments a column declared exactly ``INTEGER``.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("row_id", RowId, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True, comment="the application's purchase id"),
    # Nullable on purpose: this is the source as the application wrote it; jobs validate it.
    sa.Column("description", sa.Text),
    sa.Column("cost", sa.Float),
    sa.Column("contract", sa.String(255)),
    sa.Column("department", sa.String(255)),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("purchase_id", sa.String(64), sa.ForeignKey("purchases.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("category", sa.String(255)),
    sa.Column("labeled_by", sa.String(128)),
    sa.Column("labeled_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("row_id", RowId, primary_key=True, autoincrement=True),
    sa.Column("purchase_id", sa.String(64), sa.ForeignKey("purchases.id", ondelete="CASCADE"), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("category", sa.String(255), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("top_categories", sa.JSON, nullable=False, comment="best first, including category"),
    sa.Column("top_probabilities", sa.JSON, nullable=False),
    sa.Column("needs_review", sa.Boolean, nullable=False),
    sa.Column("image_digest", sa.String(100)),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("purchase_id", "model_version", name="uq_predictions_purchase_version"),
    sa.Index("ix_predictions_version_review", "model_version", "needs_review"),
)

TABLES = (purchases, labels, predictions)
#: Rows per INSERT transaction when seeding.
SEED_CHUNK_ROWS = 10_000
#: Ids named in an error about bad seed rows (the count is always complete).
SHOWN_BAD_IDS = 20


def display_url(url: str | URL) -> str:
    """The URL without its password, for messages and manifests."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def create_db_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout because Dask workers write concurrently.

    ``create=False`` is for jobs that only work on an existing database (refresh, predict): SQLite
    creates a missing file on the first connection, which would leave an empty database (and its
    directory) behind a job that then fails for want of tables. A missing file is refused instead.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInputError(f"not a database URL: {url!r} (e.g. sqlite:///var/purchases.db)") from exc
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            if not create and not Path(parsed.database).exists():
                raise NotFoundError(
                    f"database file {parsed.database} does not exist: run `python -m ml db seed --data <file>` "
                    "(or `python -m ml db init`) first, or pass --database-url"
                )
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 60}
        # No pooled connections: opening a SQLite file is cheap, and a pooled one would keep reading
        # a file that was replaced meanwhile (a re-run demo, a test) from a long-lived Dask worker.
        kwargs["poolclass"] = sa.NullPool
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise BadInputError(f"no driver for database URL {display_url(parsed)}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@lru_cache(maxsize=8)
def cached_engine(url: str) -> Engine:
    """One engine (and connection pool) per URL per process: Dask tasks reuse it across partitions."""
    return create_db_engine(url)


def infrastructure_error(url: str | URL, exc: Exception) -> InfrastructureError:
    return InfrastructureError(f"database {display_url(url)} failed: {str(exc).splitlines()[0]}")


def require_tables(engine: Engine, *names: str) -> None:
    """Fail with what to run when the database has not been initialised."""
    try:
        inspector = sa.inspect(engine)
        missing = [name for name in names if not inspector.has_table(name)]
    except SQLAlchemyError as exc:
        raise infrastructure_error(engine.url, exc) from exc
    if missing:
        raise NotFoundError(
            f"database {display_url(engine.url)} has no table(s) {', '.join(missing)}: "
            "run `python -m ml db init` (or `python -m ml db seed --data <file>`) first"
        )


def init_db(engine: Engine) -> None:
    """Create the tables that don't exist yet (never alters or drops)."""
    try:
        metadata.create_all(engine)
    except SQLAlchemyError as exc:
        raise infrastructure_error(engine.url, exc) from exc


def is_unlabeled(ids: pd.Series, share: float) -> np.ndarray:
    """A stable choice of ids to leave without a label (they play the part of new purchases)."""
    if share <= 0:
        return np.zeros(len(ids), dtype=bool)
    buckets = [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "big") % 10_000 for i in ids]
    return np.asarray(buckets) < share * 10_000


def _none_if_missing(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records with NaN/NA as ``None`` (drivers want SQL NULL, not float NaN)."""
    return [
        {str(key): (None if value is None or value is pd.NA or value != value else value) for key, value in row.items()}
        for row in frame.astype(object).to_dict("records")
    ]


def _chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


def _costs(frame: pd.DataFrame, ids: pd.Series) -> pd.Series | float:
    """The cost column as numbers; a cost that is not one is refused, never stored as NULL.

    The column is a number in the database, so ``abc`` cannot be loaded as the application wrote it,
    and loading it as an empty cost would silently turn a bad row into a valid one.
    """
    if schema.COST not in frame.columns:
        return np.nan
    raw = frame[schema.COST]
    cost = pd.to_numeric(raw, errors="coerce")
    unparsed = (raw.notna() & (raw.astype("string").str.strip() != "") & cost.isna()).to_numpy(dtype=bool)
    if unparsed.any():
        shown = ", ".join(ids[unparsed].head(SHOWN_BAD_IDS))
        more = " …" if unparsed.sum() > SHOWN_BAD_IDS else ""
        raise BadInputError(
            f"seed data has {int(unparsed.sum())} rows whose cost is not a number (ids: {shown}{more}); "
            "fix them or leave the cost empty"
        )
    return cost


def seed(
    engine: Engine, frame: pd.DataFrame, *, unlabeled_share: float = 0.0, labeled_by: str = "seed"
) -> dict[str, int]:
    """Insert purchases (and labels where the frame has a category) that aren't in the database yet.

    Rows are loaded as they are, bad ones included: the database plays the application's, and the
    jobs must cope with what an application writes. Only ids must be usable as keys. Existing ids
    are skipped, so seeding twice is harmless.
    """
    if schema.ID not in frame.columns or schema.DESCRIPTION not in frame.columns:
        raise BadInputError(f"seed data needs at least the columns {schema.ID}, {schema.DESCRIPTION}")
    ids = frame[schema.ID].astype("string").fillna("").str.strip()
    if (ids == "").any() or ids.duplicated().any():
        empty, dup = int((ids == "").sum()), int(ids.duplicated().sum())
        raise BadInputError(f"seed data has {empty} empty and {dup} duplicated ids; ids must be unique keys")
    has_labels = schema.CATEGORY in frame.columns
    records = pd.DataFrame({schema.ID: ids})
    for column in (schema.DESCRIPTION, schema.CONTRACT, schema.DEPARTMENT):
        records[column] = frame[column].astype("string") if column in frame.columns else pd.NA
    records[schema.COST] = _costs(frame, ids)
    label_mask = ~is_unlabeled(ids, unlabeled_share) if has_labels else np.zeros(len(frame), dtype=bool)
    records["_category"] = frame[schema.CATEGORY].astype("string") if has_labels else pd.NA
    records["_labeled"] = label_mask

    counts = {"purchases": 0, "labels": 0, "skipped_existing": 0}
    try:
        with engine.connect() as conn:
            for chunk in _chunks(records, SEED_CHUNK_ROWS):
                with conn.begin():
                    existing = set(
                        conn.scalars(sa.select(purchases.c.id).where(purchases.c.id.in_(chunk[schema.ID].tolist())))
                    )
                    new = chunk[~chunk[schema.ID].isin(existing)]
                    counts["skipped_existing"] += len(chunk) - len(new)
                    if new.empty:
                        continue
                    columns = [schema.ID, schema.DESCRIPTION, schema.COST, schema.CONTRACT, schema.DEPARTMENT]
                    conn.execute(sa.insert(purchases), _none_if_missing(new[columns]))
                    labelled = new[new["_labeled"]]
                    if not labelled.empty:
                        rows = labelled[[schema.ID, "_category"]].rename(
                            columns={schema.ID: "purchase_id", "_category": "category"}
                        )
                        conn.execute(sa.insert(labels), _none_if_missing(rows.assign(labeled_by=labeled_by)))
                    counts["purchases"] += len(new)
                    counts["labels"] += len(labelled)
    except SQLAlchemyError as exc:
        raise infrastructure_error(engine.url, exc) from exc
    return counts


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows per table (for summaries and tests)."""
    try:
        with engine.connect() as conn:
            return {
                table.name: int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0) for table in TABLES
            }
    except SQLAlchemyError as exc:
        raise infrastructure_error(engine.url, exc) from exc


# -- CLI ------------------------------------------------------------------------------------------


def _init_command(args: argparse.Namespace) -> int:
    engine = create_db_engine(args.database_url)
    init_db(engine)
    print(f"tables {', '.join(t.name for t in TABLES)} ready in {display_url(engine.url)}")
    return 0


def _seed_command(args: argparse.Namespace) -> int:
    frame = schema.read_records(args.data, encoding=args.encoding)
    engine = create_db_engine(args.database_url)
    init_db(engine)
    counts = seed(engine, frame, unlabeled_share=args.unlabeled_share)
    print(
        f"seeded {display_url(engine.url)} from {args.data}: {counts['purchases']} purchases, "
        f"{counts['labels']} labels ({counts['skipped_existing']} ids already present, skipped)"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="create or seed the purchases database")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    init = commands.add_parser("init", help="create the purchases, labels and predictions tables")
    add_database_argument(init)
    init.set_defaults(func=_init_command)

    seed_parser = commands.add_parser("seed", help="create the tables and load a purchases file (CSV/parquet)")
    seed_parser.add_argument("--data", required=True, help="file with id, description, cost, contract, ...")
    schema.add_encoding_argument(seed_parser)
    add_database_argument(seed_parser)
    seed_parser.add_argument(
        "--unlabeled-share",
        type=share,
        default=0.0,
        help="share of rows loaded without their label, standing in for new purchases (default 0)",
    )
    seed_parser.set_defaults(func=_seed_command)
