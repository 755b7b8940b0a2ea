"""``python -m ml refresh``: labelled purchases from the database → a validated training snapshot.

Training must be reproducible from something that does not change under it, and the application's
tables do change; hence a snapshot. On the way the job validates every row (bad rows are excluded
*and reported*, and too many of them stop the job before anything is written) and resolves
duplicates, because the same purchase text labelled differently by two experts would otherwise
teach the model both answers. Resolution is by majority per normalised
(description, contract, department); an even split is left out, since neither label can be trusted.

The snapshot is written as partitioned parquet by Dask and published by its manifest, written last
(see :mod:`ml.snapshots`).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ml import db, schema, snapshots
from ml.cli_types import positive_int, share
from ml.errors import InfrastructureError, NotFoundError
from ml.features import normalise_column
from ml.registry import open_store, storage_options_from_env
from ml.settings import add_database_argument, add_store_argument, image_digest

log = logging.getLogger(__name__)

#: Refuse the source when more than this share of labelled rows is invalid.
DEFAULT_MAX_BAD_SHARE = 0.05
#: Rows per parquet part (one Dask partition each).
DEFAULT_ROWS_PER_FILE = 100_000
#: Rows fetched per round trip while reading the source.
READ_CHUNK_ROWS = 50_000
#: Conflicting groups spelled out in reports and the manifest (counts are always complete).
SHOWN_CONFLICTS = 10
#: Ids per validation reason kept in the manifest.
MANIFEST_IDS = 50

_KEY = ["_description", "_contract", "_department"]


@dataclass(frozen=True)
class RefreshConfig:
    database_url: str
    store: str
    max_bad_share: float = DEFAULT_MAX_BAD_SHARE
    rows_per_file: int = DEFAULT_ROWS_PER_FILE


@dataclass
class DedupeReport:
    """What duplicate resolution did, in counts a reviewer can check against the source."""

    rows_in: int = 0
    rows_out: int = 0
    duplicate_groups: int = 0  # keys with more than one row
    conflict_groups: int = 0  # keys whose rows carry more than one label
    conflict_rows: int = 0
    majority_groups: int = 0  # conflicts settled by a strict majority
    tie_groups: int = 0  # conflicts with an even split: left out
    tie_rows: int = 0
    #: A few conflicting groups: the normalised key and the count of each label.
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duplicates_removed(self) -> int:
        return self.rows_in - self.rows_out - self.tie_rows

    def summary(self) -> str:
        lines = [
            f"{self.rows_in} valid rows → {self.rows_out} after resolving duplicates: "
            f"{self.duplicate_groups} duplicated texts, {self.duplicates_removed} duplicate rows merged",
        ]
        if self.conflict_groups:
            lines.append(
                f"  {self.conflict_groups} texts with conflicting labels ({self.conflict_rows} rows): "
                f"{self.majority_groups} settled by majority, {self.tie_groups} even splits left out "
                f"({self.tie_rows} rows)"
            )
            for example in self.examples:
                votes = ", ".join(f"{label} x{n}" for label, n in example["labels"].items())
                where = f"{example['description'][:60]!r} ({example['department'][:30] or 'no department'})"
                lines.append(f"    {where}: {votes} → {example['resolution']}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "duplicate_groups": self.duplicate_groups,
            "duplicates_removed": self.duplicates_removed,
            "conflict_groups": self.conflict_groups,
            "conflict_rows": self.conflict_rows,
            "majority_groups": self.majority_groups,
            "tie_groups": self.tie_groups,
            "tie_rows": self.tie_rows,
            "examples": self.examples,
        }


@dataclass
class RefreshResult:
    snapshot_id: str
    url: str
    manifest: dict[str, Any]


def labelled_query() -> sa.Select[Any]:
    """Every purchase with its expert label, in insertion order (stable snapshots for a stable source)."""
    p, lab = db.purchases, db.labels
    return (
        sa.select(
            p.c.id,
            p.c.description,
            p.c.cost,
            p.c.contract,
            p.c.department,
            lab.c.category,
        )
        .join(lab, lab.c.purchase_id == p.c.id)
        .order_by(p.c.row_id)
    )


def read_labelled(engine: sa.Engine) -> pd.DataFrame:
    """The labelled purchases, fetched in chunks (one round trip per chunk, not one huge result)."""
    db.require_tables(engine, db.purchases.name, db.labels.name)
    try:
        with engine.connect() as conn:
            chunks = list(
                pd.read_sql(
                    labelled_query(),
                    conn.execution_options(stream_results=True),
                    chunksize=READ_CHUNK_ROWS,
                    dtype={c: "string" for c in schema.TEXT_COLUMNS} | {schema.COST: "float64"},
                )
            )
    except SQLAlchemyError as exc:
        raise db.infrastructure_error(engine.url, exc) from exc
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in schema.LABELED_COLUMNS})
    return pd.concat(chunks, ignore_index=True)


def resolve_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, DedupeReport]:
    """One row per normalised (description, contract, department), labelled by majority.

    Counts are taken with a ``groupby`` over (key, label); per key the label with the most votes
    wins, and the first row (source order) carrying that label is kept with its id and cost.
    """
    report = DedupeReport(rows_in=len(frame))
    if frame.empty:
        return frame.copy(), report
    keyed = frame.assign(
        _description=normalise_column(frame[schema.DESCRIPTION]),
        _contract=normalise_column(frame[schema.CONTRACT]),
        _department=normalise_column(frame[schema.DEPARTMENT]),
    )
    votes = keyed.groupby([*_KEY, schema.CATEGORY], sort=False, observed=True).size().rename("n").reset_index()
    per_key = votes.groupby(_KEY, sort=False)["n"]
    votes["rows"] = per_key.transform("sum")
    votes["labels"] = per_key.transform("size")
    votes["top"] = per_key.transform("max")
    winners = votes[votes["n"] == votes["top"]]
    winners_per_key = winners.groupby(_KEY, sort=False)["n"].transform("size")
    keep = winners[winners_per_key == 1][[*_KEY, schema.CATEGORY]]

    keys = votes.drop_duplicates(_KEY)
    conflicts = keys[keys["labels"] > 1]
    tie_keys = winners[winners_per_key > 1].drop_duplicates(_KEY)
    report.duplicate_groups = int((keys["rows"] > 1).sum())
    report.conflict_groups = len(conflicts)
    report.conflict_rows = int(conflicts["rows"].sum())
    report.tie_groups = len(tie_keys)
    report.tie_rows = int(tie_keys["rows"].sum())
    report.majority_groups = report.conflict_groups - report.tie_groups
    report.examples = _conflict_examples(votes, conflicts, tie_keys)

    resolved = keyed.merge(keep, on=[*_KEY, schema.CATEGORY], how="inner", sort=False)
    resolved = resolved.drop_duplicates(_KEY, keep="first")[schema.LABELED_COLUMNS].reset_index(drop=True)
    report.rows_out = len(resolved)
    return resolved, report


def _conflict_examples(votes: pd.DataFrame, conflicts: pd.DataFrame, tie_keys: pd.DataFrame) -> list[dict[str, Any]]:
    """The largest conflicts, so a reviewer sees what kind of disagreement the data holds."""
    largest = conflicts.nlargest(SHOWN_CONFLICTS, "rows")
    ties = set(map(tuple, tie_keys[_KEY].to_numpy()))
    examples = []
    for key in map(tuple, largest[_KEY].to_numpy()):
        mask = (votes[_KEY] == pd.Series(key, index=_KEY)).all(axis=1)
        counts = votes[mask].sort_values("n", ascending=False)
        labels = {str(label): int(n) for label, n in zip(counts[schema.CATEGORY], counts["n"], strict=True)}
        resolution = "tie, left out" if key in ties else f"kept {next(iter(labels))}"
        examples.append(
            {
                "description": key[0],
                "contract": key[1],
                "department": key[2],
                "labels": labels,
                "resolution": resolution,
            }
        )
    return examples


def write_parts(frame: pd.DataFrame, store: str, snapshot_id: str, rows_per_file: int) -> list[str]:
    """Write the parquet parts with Dask (in this process's threads) and return their file names.

    The threaded scheduler is forced: a distributed client may be active (the demo, tests), and
    its workers need not see this store.
    """
    url = snapshots.snapshot_url(store, snapshot_id)
    npartitions = max(1, math.ceil(len(frame) / rows_per_file))
    options = storage_options_from_env() if store.startswith("s3://") else None
    try:
        with dask.config.set(scheduler="threads"):
            dd.from_pandas(frame, npartitions=npartitions, sort=False).to_parquet(
                url,
                engine="pyarrow",
                write_index=False,
                storage_options=options,
                name_function=lambda i: f"part-{i:05d}.parquet",
                write_metadata_file=False,
            )
        fs, root = snapshots.snapshot_root(store)
        fs.invalidate_cache(f"{root}/{snapshot_id}")
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/{snapshot_id}", detail=False))
    except Exception as exc:
        raise InfrastructureError(f"cannot write snapshot {snapshot_id} to {url}: {exc}") from exc
    return [n for n in names if n.endswith(".parquet")]


def refresh(config: RefreshConfig) -> RefreshResult:
    """Read, validate, resolve duplicates, write parts, publish the manifest (last)."""
    open_store(config.store)  # a bad store URL fails before the database is read
    engine = db.create_db_engine(config.database_url, create=False)
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    raw = read_labelled(engine)
    query_seconds = time.perf_counter() - clock
    source = db.display_url(engine.url)
    engine.dispose()
    if raw.empty:
        raise NotFoundError(
            f"no labelled purchases in {source} (tables purchases+labels are empty): "
            "seed the database or label some purchases first"
        )
    log.info("read %d labelled purchases from %s in %.1fs", len(raw), source, query_seconds)

    good, validation = schema.clean(raw, labeled=True, max_bad_share=config.max_bad_share)
    if validation.bad:
        log.warning("excluded invalid rows:\n%s", validation.summary())
    resolved, dedupe = resolve_duplicates(good)
    log.info("%s", dedupe.summary())
    if resolved.empty:
        raise NotFoundError(f"nothing left to train on from {source} after validation and duplicate resolution")

    snapshot_id = snapshots.new_snapshot_id()
    files = write_parts(resolved, config.store, snapshot_id, config.rows_per_file)
    labels = resolved[schema.CATEGORY].value_counts()
    manifest = {
        "snapshot_id": snapshot_id,
        "created_at": datetime.now(UTC).isoformat(),
        "source": {
            "database": source,
            "query": str(labelled_query().compile(compile_kwargs={"literal_binds": True})),
            "query_started_at": started_at.isoformat(),
            "query_seconds": round(query_seconds, 3),
        },
        "rows": {
            "read": len(raw),
            "invalid": validation.n_bad,
            "duplicates_removed": dedupe.duplicates_removed,
            "ties_left_out": dedupe.tie_rows,
            "written": len(resolved),
        },
        "validation": {
            "n_rows": validation.n_rows,
            "n_bad": validation.n_bad,
            "max_bad_share": config.max_bad_share,
            "bad": {reason: {"count": len(ids), "ids": ids[:MANIFEST_IDS]} for reason, ids in validation.bad.items()},
        },
        "duplicates": dedupe.to_dict(),
        "label_distribution": {str(k): int(v) for k, v in labels.items()},
        "n_labels": len(labels),
        "schema": {column: str(dtype) for column, dtype in resolved.dtypes.items()},
        "files": files,
        "image_digest": image_digest(),
    }
    snapshots.write_manifest(config.store, snapshot_id, manifest)
    return RefreshResult(snapshot_id, snapshots.snapshot_url(config.store, snapshot_id), manifest)


def _run(args: argparse.Namespace) -> int:
    result = refresh(
        RefreshConfig(
            database_url=args.database_url,
            store=args.store,
            max_bad_share=args.max_bad_share,
            rows_per_file=args.rows_per_file,
        )
    )
    rows = result.manifest["rows"]
    print(
        f"snapshot {result.snapshot_id}: {rows['written']} rows, {result.manifest['n_labels']} labels "
        f"(read {rows['read']}, invalid {rows['invalid']}, duplicates merged {rows['duplicates_removed']}, "
        f"even splits left out {rows['ties_left_out']})"
    )
    print(f"written to {result.url} (train with: python -m ml train --snapshot {result.snapshot_id})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "refresh", help="validate labelled purchases and write a training snapshot (parquet + manifest)"
    )
    add_database_argument(parser)
    add_store_argument(parser)
    parser.add_argument(
        "--max-bad-share",
        type=share,
        default=DEFAULT_MAX_BAD_SHARE,
        help=f"refuse when more invalid rows than this share (default {DEFAULT_MAX_BAD_SHARE})",
    )
    parser.add_argument(
        "--rows-per-file",
        type=positive_int,
        default=DEFAULT_ROWS_PER_FILE,
        help=f"rows per parquet part (default {DEFAULT_ROWS_PER_FILE})",
    )
    parser.set_defaults(func=_run)
