"""``python -m ml predict``: batch predictions for purchases, computed on Dask, written to the database.

How it stays bounded and safe:

- **Partitions are id ranges** of ``--partition-rows`` consecutive ``purchases.row_id`` values, so a
  partition never holds more rows than that whatever the table size; each one is read *by a worker*
  straight from the database (``dask.dataframe.from_map``), predicted there (``map_partitions``) and
  written back from there. The client only ever holds per-partition counts.
- **The model is shipped once**: loaded and sha256-verified by the client, then scattered to every
  worker (``broadcast=True``); tasks reference it, they don't carry it.
- **Writes are idempotent per model version**: each chunk deletes that version's rows for its
  purchases and inserts the new ones in one transaction, and ``(purchase_id, model_version)`` is
  unique. A task Dask retries after a worker died, or a whole run killed half-way and started
  again, converges to exactly one prediction per purchase and version.
- **Only missing work is done**: without ``--all`` a partition reads only purchases that have no
  prediction from this version yet, so a re-run after a crash continues where the last one stopped.

Invalid purchases (empty description, negative cost, ...) are not predicted; they are counted and
named in the summary, and more than ``--max-bad-share`` of them makes the run exit with code 2
after the valid rows were written.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd
import sqlalchemy as sa
from distributed import Client
from sqlalchemy.exc import SQLAlchemyError

from ml import db, schema
from ml.cli_types import positive_int, share
from ml.cluster import dask_client
from ml.decisions import DEFAULT_REVIEW_THRESHOLD, review_threshold
from ml.errors import BadInputError, InfrastructureError, MlError, NotFoundError
from ml.model import predict
from ml.registry import ModelRegistry
from ml.settings import (
    IMAGE_DIGEST_ENV,
    add_dask_arguments,
    add_database_argument,
    add_model_name_argument,
    add_store_argument,
    image_digest,
)

log = logging.getLogger(__name__)

DEFAULT_PARTITION_ROWS = 20_000
DEFAULT_WRITE_CHUNK_ROWS = 5_000
DEFAULT_MAX_BAD_SHARE = 0.05
TOP_K = 3
#: Invalid ids per reason each partition reports back (counts are always complete).
SHOWN_IDS = 20

_RECORD_META = pd.DataFrame(
    {
        "row_id": pd.Series(dtype="int64"),
        schema.ID: pd.Series(dtype="string"),
        schema.DESCRIPTION: pd.Series(dtype="string"),
        schema.COST: pd.Series(dtype="float64"),
        schema.CONTRACT: pd.Series(dtype="string"),
        schema.DEPARTMENT: pd.Series(dtype="string"),
    }
)
#: One row per partition: what it read, predicted, flagged and rejected.
_RESULT_META = pd.DataFrame(
    {
        "first_row_id": pd.Series(dtype="int64"),
        "read": pd.Series(dtype="int64"),
        "predicted": pd.Series(dtype="int64"),
        "flagged": pd.Series(dtype="int64"),
        "invalid": pd.Series(dtype="int64"),
        "write_seconds": pd.Series(dtype="float64"),
        "bad": pd.Series(dtype="object"),  # JSON {reason: [count, [ids...]]}
        "categories": pd.Series(dtype="object"),  # JSON {category: count}
    }
)


@dataclass(frozen=True)
class PredictConfig:
    database_url: str
    store: str
    model_name: str
    version: str = "latest"
    predict_all: bool = False
    review_threshold: float | None = None  # None: the model's metadata, else the default
    partition_rows: int = DEFAULT_PARTITION_ROWS
    write_chunk_rows: int = DEFAULT_WRITE_CHUNK_ROWS
    max_bad_share: float = DEFAULT_MAX_BAD_SHARE
    scheduler: str | None = None
    timeout: float = 30.0


@dataclass
class PredictSummary:
    model_version: str
    database: str
    review_threshold: float
    threshold_source: str = "set explicitly"
    pending: int = 0  # rows selected for prediction
    predicted: int = 0
    flagged: int = 0
    invalid: int = 0
    partitions: int = 0
    seconds: float = 0.0
    #: Time spent in database writes, summed over partitions (they overlap across workers).
    write_seconds: float = 0.0
    total_purchases: int = 0
    bad: dict[str, list[Any]] = field(default_factory=dict)  # reason -> [count, sample ids]
    categories: dict[str, int] = field(default_factory=dict)
    image_digest: str | None = None

    @property
    def flagged_share(self) -> float:
        return self.flagged / self.predicted if self.predicted else 0.0

    @property
    def invalid_share(self) -> float:
        return self.invalid / self.pending if self.pending else 0.0

    def lines(self) -> list[str]:
        if not self.pending:
            return [
                f"nothing to predict: all {self.total_purchases} purchases in {self.database} already "
                f"have predictions from model {self.model_version}"
            ]
        rate = self.predicted / self.seconds if self.seconds else 0.0
        out = [
            f"model {self.model_version}: predicted {self.predicted} of {self.pending} pending purchases "
            f"in {self.seconds:.1f}s ({rate:,.0f} rows/s, {self.partitions} partitions)",
            f"flagged for review (confidence < {self.review_threshold:g}, from {self.threshold_source}): "
            f"{self.flagged} ({self.flagged_share:.1%})",
        ]
        if self.invalid:
            out.append(f"invalid, not predicted: {self.invalid} ({self.invalid_share:.1%})")
            for reason, (count, ids) in self.bad.items():
                out.append(f"  {count} rows: {reason} (ids: {', '.join(ids[:SHOWN_IDS])})")
        return out


# -- worker side ------------------------------------------------------------------------------------


def pending_query(lo: int, hi: int, model_version: str, predict_all: bool) -> sa.Select[Any]:
    """Purchases with ``lo <= row_id < hi`` that still need a prediction from ``model_version``."""
    p, pr = db.purchases, db.predictions
    query = sa.select(p.c.row_id, p.c.id, p.c.description, p.c.cost, p.c.contract, p.c.department).where(
        p.c.row_id >= lo, p.c.row_id < hi
    )
    if not predict_all:
        done = sa.select(pr.c.row_id).where(pr.c.purchase_id == p.c.id, pr.c.model_version == model_version)
        query = query.where(~sa.exists(done))
    return query.order_by(p.c.row_id)


def read_range(bounds: tuple[int, int], database_url: str, model_version: str, predict_all: bool) -> pd.DataFrame:
    """One partition, read by the worker that predicts it."""
    lo, hi = bounds
    engine = db.cached_engine(database_url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(pending_query(lo, hi, model_version, predict_all), conn)
    except SQLAlchemyError as exc:
        raise db.infrastructure_error(engine.url, exc) from exc
    out = _RECORD_META.iloc[:0].copy() if frame.empty else frame
    return out.astype(_RECORD_META.dtypes.to_dict())


def predict_and_write(
    frame: pd.DataFrame,
    pipeline: Any,
    *,
    database_url: str,
    model_version: str,
    review_threshold: float,
    digest: str | None,
    write_chunk_rows: int,
) -> pd.DataFrame:
    """Validate, predict and write one partition; return its counts (one row)."""
    first = int(frame["row_id"].iloc[0]) if len(frame) else -1
    report = schema.validate(frame, labeled=False)
    good = schema.coerce(frame[~report.bad_rows], labeled=False).reset_index(drop=True)
    bad = {reason: [len(ids), ids[:SHOWN_IDS]] for reason, ids in report.bad.items()}
    categories: Counter[str] = Counter()
    flagged = 0
    write_seconds = 0.0
    if len(good):
        result = predict(pipeline, good, top_k=TOP_K)
        review = result.needs_review(review_threshold)
        flagged = int(review.sum())
        categories.update(result.category.tolist())
        now = datetime.now(UTC)
        rows = pd.DataFrame(
            {
                "purchase_id": good[schema.ID].astype(str).to_numpy(),
                "model_version": model_version,
                "category": result.category.astype(str),
                "confidence": result.confidence.astype(float),
                "top_categories": [list(map(str, row)) for row in result.top_categories],
                "top_probabilities": [[round(float(p), 6) for p in row] for row in result.top_probabilities],
                "needs_review": review.astype(bool),
                "image_digest": digest,
                "predicted_at": now,
            }
        )
        clock = time.perf_counter()
        write_predictions(database_url, model_version, rows, write_chunk_rows)
        write_seconds = time.perf_counter() - clock
    return pd.DataFrame(
        {
            "first_row_id": [first],
            "read": [len(frame)],
            "predicted": [len(good)],
            "flagged": [flagged],
            "invalid": [report.n_bad],
            "write_seconds": [write_seconds],
            "bad": [json.dumps(bad)],
            "categories": [json.dumps(dict(categories))],
        }
    ).astype(_RESULT_META.dtypes.to_dict())


def write_predictions(database_url: str, model_version: str, rows: pd.DataFrame, chunk_rows: int) -> None:
    """Replace this version's predictions for these purchases, one transaction per chunk."""
    engine = db.cached_engine(database_url)
    table = db.predictions
    try:
        for start in range(0, len(rows), chunk_rows):
            chunk = rows.iloc[start : start + chunk_rows]
            records = [{str(k): v for k, v in row.items()} for row in chunk.to_dict("records")]
            with engine.begin() as conn:
                conn.execute(
                    sa.delete(table).where(
                        table.c.model_version == model_version,
                        table.c.purchase_id.in_(chunk["purchase_id"].tolist()),
                    )
                )
                conn.execute(sa.insert(table), records)
    except SQLAlchemyError as exc:
        raise db.infrastructure_error(engine.url, exc) from exc


# -- client side ------------------------------------------------------------------------------------


def id_ranges(lo: int, hi: int, width: int) -> list[tuple[int, int]]:
    """Half-open ranges of at most ``width`` row ids covering ``[lo, hi]``."""
    return [(start, min(start + width, hi + 1)) for start in range(lo, hi + 1, width)]


def pending_bounds(engine: sa.Engine, model_version: str, predict_all: bool) -> tuple[int, int, int, int]:
    """(count, min row_id, max row_id) of the pending purchases, and the table's total rows."""
    p = db.purchases
    pending = pending_query(0, 2**62, model_version, predict_all).order_by(None).subquery()
    try:
        with engine.connect() as conn:
            total = int(conn.scalar(sa.select(sa.func.count()).select_from(p)) or 0)
            count, lo, hi = conn.execute(
                sa.select(sa.func.count(), sa.func.min(pending.c.row_id), sa.func.max(pending.c.row_id))
            ).one()
    except SQLAlchemyError as exc:
        raise db.infrastructure_error(engine.url, exc) from exc
    return int(count or 0), int(lo or 0), int(hi or 0), total


def build_graph(
    config: PredictConfig, ranges: list[tuple[int, int]], model: Any, version: str, threshold: float
) -> dd.DataFrame:
    """The lazy per-partition pipeline: read range → validate, predict, write → counts."""
    records = dd.from_map(
        read_range,
        ranges,
        database_url=config.database_url,
        model_version=version,
        predict_all=config.predict_all,
        meta=_RECORD_META,
        enforce_metadata=False,
        label="read-purchases",
    )
    return records.map_partitions(
        predict_and_write,
        model,
        database_url=config.database_url,
        model_version=version,
        review_threshold=threshold,
        digest=image_digest(),
        write_chunk_rows=config.write_chunk_rows,
        meta=_RESULT_META,
        enforce_metadata=False,
    )


def run_predict(config: PredictConfig, client: Client | None = None) -> PredictSummary:
    """Predict every pending purchase; raise the project's errors for anything that stops it.

    Database and model are checked before Dask is contacted, so bad input is reported as such
    (not as a cluster problem) and quickly.
    """
    engine = db.create_db_engine(config.database_url, create=False)
    db.require_tables(engine, *(t.name for t in db.TABLES))
    loaded = ModelRegistry(config.store, config.model_name).load(config.version)
    threshold, source = review_threshold(loaded.metadata, config.review_threshold, DEFAULT_REVIEW_THRESHOLD)
    summary = PredictSummary(
        model_version=loaded.version,
        database=db.display_url(engine.url),
        review_threshold=threshold,
        threshold_source=source,
        image_digest=image_digest(),
    )
    count, lo, hi, summary.total_purchases = pending_bounds(engine, loaded.version, config.predict_all)
    engine.dispose()
    if summary.total_purchases == 0:
        raise NotFoundError(f"the purchases table in {summary.database} is empty: nothing to predict")
    summary.pending = count
    if count == 0:
        return summary
    ranges = id_ranges(lo, hi, config.partition_rows)
    summary.partitions = len(ranges)
    log.info("predicting %d purchases in %d partitions with model %s", count, len(ranges), loaded.version)

    if client is None:
        with dask_client(config.scheduler, timeout=config.timeout) as own_client:
            results, summary.seconds = _compute(own_client, config, ranges, loaded.pipeline, loaded.version, threshold)
    else:
        results, summary.seconds = _compute(client, config, ranges, loaded.pipeline, loaded.version, threshold)
    _add_results(summary, results)
    if summary.invalid_share > config.max_bad_share:
        raise BadInputError(
            "\n".join(summary.lines())
            + f"\nrefusing: invalid share {summary.invalid_share:.1%} exceeds --max-bad-share "
            f"{config.max_bad_share:.1%} (valid rows were predicted and written)"
        )
    return summary


def _compute(
    client: Client, config: PredictConfig, ranges: list[tuple[int, int]], pipeline: Any, version: str, threshold: float
) -> tuple[pd.DataFrame, float]:
    """Run the graph; the time excludes cluster start-up (it is the prediction stage's own)."""
    clock = time.perf_counter()
    try:
        model = client.scatter(pipeline, broadcast=True, hash=False)
        graph = build_graph(config, ranges, dask.delayed(model), version, threshold)
        return graph.compute(), time.perf_counter() - clock
    except MlError:
        raise
    except (OSError, TimeoutError) as exc:  # CommClosedError and friends: the scheduler went away
        raise InfrastructureError(f"lost the Dask scheduler during predict: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        # KilledWorker (a partition's workers kept dying), FutureCancelledError, ...: Dask gave up.
        if type(exc).__module__.startswith(("distributed", "dask")) or "Cancelled" in type(exc).__name__:
            raise InfrastructureError(
                f"Dask failed during predict ({type(exc).__name__}: {exc}); predictions written so far "
                "are kept, re-run to finish the rest"
            ) from exc
        raise


def _add_results(summary: PredictSummary, results: pd.DataFrame) -> None:
    categories: Counter[str] = Counter()
    summary.predicted += int(results["predicted"].sum())
    summary.flagged += int(results["flagged"].sum())
    summary.invalid += int(results["invalid"].sum())
    summary.write_seconds += float(results["write_seconds"].sum())
    for encoded_categories, encoded_bad in zip(results["categories"], results["bad"], strict=True):
        categories.update(json.loads(str(encoded_categories)))
        for reason, (count, ids) in json.loads(str(encoded_bad)).items():
            seen = summary.bad.setdefault(reason, [0, []])
            seen[0] += count
            seen[1] = (seen[1] + ids)[:SHOWN_IDS]
    summary.categories = dict(categories.most_common())


# -- CLI ----------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    summary = run_predict(
        PredictConfig(
            database_url=args.database_url,
            store=args.store,
            model_name=args.model_name,
            version=args.version,
            predict_all=args.all,
            review_threshold=args.review_threshold,
            partition_rows=args.partition_rows,
            write_chunk_rows=args.write_chunk_rows,
            max_bad_share=args.max_bad_share,
            scheduler=args.scheduler,
            timeout=args.dask_timeout,
        )
    )
    for line in summary.lines():
        print(line)
    if summary.predicted:
        print(f"results: table {db.predictions.name} (model_version = '{summary.model_version}') in {summary.database}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="batch-predict purchases without a prediction from the LATEST model, on Dask"
    )
    add_database_argument(parser)
    add_store_argument(parser)
    add_model_name_argument(parser)
    parser.add_argument("--version", default="latest", help="model version (default: LATEST)")
    parser.add_argument(
        "--all", action="store_true", help="re-predict every purchase, replacing this version's predictions"
    )
    parser.add_argument(
        "--review-threshold",
        type=share,
        default=None,
        help="flag rows whose confidence is below this for expert review "
        f"(default: the model's metadata, else {DEFAULT_REVIEW_THRESHOLD})",
    )
    parser.add_argument(
        "--partition-rows",
        type=positive_int,
        default=DEFAULT_PARTITION_ROWS,
        help=f"row ids per partition; bounds worker memory (default {DEFAULT_PARTITION_ROWS})",
    )
    parser.add_argument(
        "--write-chunk-rows",
        type=positive_int,
        default=DEFAULT_WRITE_CHUNK_ROWS,
        help=f"rows per write transaction (default {DEFAULT_WRITE_CHUNK_ROWS})",
    )
    parser.add_argument(
        "--max-bad-share",
        type=share,
        default=DEFAULT_MAX_BAD_SHARE,
        help=f"exit 2 when more invalid purchases than this share (default {DEFAULT_MAX_BAD_SHARE})",
    )
    add_dask_arguments(parser)
    parser.epilog = f"the image digest recorded with each prediction comes from ${IMAGE_DIGEST_ENV}"
    parser.set_defaults(func=_run)
