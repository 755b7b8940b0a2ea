"""``python -m ml review export|import``: the flagged predictions to experts, their choices back as labels.

The loop: ``ml predict`` flags lines under the model's review threshold → ``ml review export``
writes them as a CSV, most useful first → experts fill ``expert_category`` in a spreadsheet →
``ml review import`` stores their choices in the ``labels`` table → ``ml refresh`` puts them in the
next snapshot → ``ml train`` learns from them.

Order: a label is worth more the less sure the model is and the more lines it settles. The model
predicts every line with the same normalised description alike, so the export has one row per
description (a representative purchase, and how many flagged lines share it), ranked by
``(1 - confidence) × lines``. Labelling the representative teaches the model the description; the
refresh keeps one row per description, contract and department anyway.

Import is input from outside (DESIGN principle 6): every row is checked before anything is written
(known purchase, known category, no duplicate, no existing label unless ``--overwrite``), a bad
file is refused as a whole naming what was wrong, and the labels go in one transaction.
"""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ml import db
from ml.cli_types import positive_int
from ml.errors import BadInputError, NotFoundError
from ml.features import normalise_column
from ml.registry import ModelRegistry
from ml.settings import add_database_argument, add_model_name_argument, add_store_argument

#: The column experts fill; rows left empty are not imported.
EXPERT_COLUMN = "expert_category"
PURCHASE_COLUMN = "purchase_id"
#: Most rows one import file may hold: a review file is a day's work, not a database dump.
MAX_IMPORT_ROWS = 100_000
#: Ids or values spelled out per problem in an error (the count is always complete).
SHOWN = 10
#: Longest ``--labeled-by`` (the ``labels.labeled_by`` column's size).
MAX_LABELED_BY = 128
#: Who an import's labels are attributed to unless ``--labeled-by`` says otherwise.
DEFAULT_LABELED_BY = "review"


def flagged_lines(engine: sa.Engine, model_version: str) -> pd.DataFrame:
    """The version's predictions flagged for review, of purchases no expert has labelled yet."""
    p, pr, lab = db.purchases, db.predictions, db.labels
    query = (
        sa.select(
            pr.c.purchase_id,
            p.c.description,
            p.c.cost,
            p.c.contract,
            p.c.department,
            pr.c.category,
            pr.c.confidence,
            pr.c.top_categories,
            pr.c.top_probabilities,
        )
        .join(p, p.c.id == pr.c.purchase_id)
        .outerjoin(lab, lab.c.purchase_id == pr.c.purchase_id)
        .where(pr.c.model_version == model_version, pr.c.needs_review.is_(True), lab.c.purchase_id.is_(None))
        .order_by(p.c.row_id)
    )
    db.require_tables(engine, *(t.name for t in db.TABLES))
    try:
        with engine.connect() as conn:
            return pd.read_sql(query, conn)
    except SQLAlchemyError as exc:
        raise db.infrastructure_error(engine.url, exc) from exc


def review_queue(flagged: pd.DataFrame) -> pd.DataFrame:
    """One row per normalised description, the most valuable label first; columns as exported."""
    if flagged.empty:
        return pd.DataFrame(columns=export_columns())
    frame = flagged.assign(_key=normalise_column(flagged["description"]), _uncertainty=1.0 - flagged["confidence"])
    groups = frame.groupby("_key", sort=False)
    first = groups.head(1).set_index("_key")
    lines = groups.size()
    uncertainty = groups["_uncertainty"].mean()
    queue = first.assign(lines=lines, priority=(uncertainty * lines).round(6)).reset_index(drop=True)
    queue = queue.sort_values(["priority", PURCHASE_COLUMN], ascending=[False, True], kind="stable")
    for k in range(3):
        queue[f"top{k + 1}"] = [row[k] if len(row) > k else "" for row in queue["top_categories"]]
        queue[f"p{k + 1}"] = [round(float(row[k]), 4) if len(row) > k else np.nan for row in queue["top_probabilities"]]
    queue["confidence"] = queue["confidence"].round(4)
    queue[EXPERT_COLUMN] = ""
    return queue[export_columns()].reset_index(drop=True)


def export_columns() -> list[str]:
    return [
        "priority",
        "lines",
        PURCHASE_COLUMN,
        "description",
        "cost",
        "contract",
        "department",
        "category",
        "confidence",
        *(f"{name}{k}" for k in (1, 2, 3) for name in ("top", "p")),
        EXPERT_COLUMN,
    ]


def export_queue(engine: sa.Engine, model_version: str, limit: int | None = None) -> pd.DataFrame:
    """The review queue of ``model_version``'s flagged, unlabelled lines (at most ``limit`` rows)."""
    flagged = flagged_lines(engine, model_version)
    if flagged.empty:
        raise NotFoundError(
            f"no unlabelled predictions of model {model_version} flagged for review in {db.display_url(engine.url)}: "
            "run `python -m ml predict` first (or every flagged line has a label already)"
        )
    queue = review_queue(flagged)
    return queue if limit is None else queue.head(limit)


@dataclass(frozen=True)
class ImportResult:
    inserted: int
    overwritten: int
    skipped_empty: int


def _listed(values: Any) -> str:
    values = list(values)
    return ", ".join(map(repr, values[:SHOWN])) + (f" … ({len(values)} in all)" if len(values) > SHOWN else "")


def read_choices(path: str) -> tuple[pd.DataFrame, int]:
    """The filled rows of a review file (purchase id, category) and how many rows were left empty."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=MAX_IMPORT_ROWS + 1)
    except FileNotFoundError as exc:
        raise BadInputError(f"review file not found: {path}") from exc
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise BadInputError(f"cannot read review file {path} as UTF-8 CSV: {exc}") from exc
    missing = [c for c in (PURCHASE_COLUMN, EXPERT_COLUMN) if c not in frame.columns]
    if missing:
        raise BadInputError(f"review file {path} has no column(s) {', '.join(missing)} (as `ml review export` writes)")
    if len(frame) > MAX_IMPORT_ROWS:
        raise BadInputError(f"review file {path} has more than {MAX_IMPORT_ROWS} rows; split it")
    choices = pd.DataFrame(
        {"purchase_id": frame[PURCHASE_COLUMN].str.strip(), "category": frame[EXPERT_COLUMN].str.strip()}
    )
    filled = choices["category"] != ""
    choices = choices[filled]
    if choices.empty:
        raise BadInputError(f"review file {path}: no row has an {EXPERT_COLUMN}; nothing to import")
    return choices.reset_index(drop=True), int((~filled).sum())


def validate_choices(conn: sa.Connection, choices: pd.DataFrame, overwrite: bool) -> tuple[list[str], set[str]]:
    """Every problem of the file (empty when it is good), and the ids that already have a label."""
    problems = []
    empty_ids = choices["purchase_id"] == ""
    if empty_ids.any():
        problems.append(f"{int(empty_ids.sum())} rows have an {EXPERT_COLUMN} but no {PURCHASE_COLUMN}")
    duplicated = choices.loc[choices["purchase_id"].duplicated(keep=False) & ~empty_ids, "purchase_id"].unique()
    if len(duplicated):
        problems.append(f"purchases chosen for more than once: {_listed(duplicated)}")
    ids = [i for i in choices["purchase_id"].unique().tolist() if i]
    known_ids: set[str] = set()
    labelled: set[str] = set()
    for start in range(0, len(ids), 5_000):  # bounded IN lists
        chunk = ids[start : start + 5_000]
        known_ids |= set(conn.scalars(sa.select(db.purchases.c.id).where(db.purchases.c.id.in_(chunk))))
        labelled |= set(conn.scalars(sa.select(db.labels.c.purchase_id).where(db.labels.c.purchase_id.in_(chunk))))
    unknown = [i for i in ids if i not in known_ids]
    if unknown:
        problems.append(f"unknown purchases (not in the purchases table): {_listed(unknown)}")
    categories = set(conn.scalars(sa.select(db.labels.c.category).distinct()))
    unknown_categories = sorted(set(choices["category"]) - categories)
    if unknown_categories:
        hints = [
            f"{c!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(c, categories, 1)) else repr(c)
            for c in unknown_categories[:SHOWN]
        ]
        more = f" … ({len(unknown_categories)} in all)" if len(unknown_categories) > SHOWN else ""
        problems.append(f"unknown categories (no label uses them): {', '.join(hints)}{more}")
    if labelled and not overwrite:
        problems.append(
            f"purchases that already have a label: {_listed(sorted(labelled))}; "
            "pass --overwrite to replace their labels with the file's"
        )
    return problems, labelled


def import_labels(
    engine: sa.Engine, choices: pd.DataFrame, *, labeled_by: str, overwrite: bool = False, skipped_empty: int = 0
) -> ImportResult:
    """Store the experts' choices as labels: all of them in one transaction, or none and the reasons."""
    if not labeled_by.strip() or len(labeled_by) > MAX_LABELED_BY:
        raise BadInputError(f"--labeled-by must be 1 to 128 characters, got {len(labeled_by)}")
    db.require_tables(engine, db.purchases.name, db.labels.name)
    try:
        with engine.begin() as conn:
            problems, labelled = validate_choices(conn, choices, overwrite)
            if problems:
                raise BadInputError("review file refused, nothing imported:\n  " + "\n  ".join(problems))
            rows = [
                {"purchase_id": pid, "category": category, "labeled_by": labeled_by}
                for pid, category in zip(choices["purchase_id"], choices["category"], strict=True)
            ]
            replaced = [row for row in rows if row["purchase_id"] in labelled]
            new = [row for row in rows if row["purchase_id"] not in labelled]
            if replaced:
                conn.execute(
                    sa.delete(db.labels).where(db.labels.c.purchase_id.in_([row["purchase_id"] for row in replaced]))
                )
            conn.execute(sa.insert(db.labels), new + replaced)
    except SQLAlchemyError as exc:
        raise db.infrastructure_error(engine.url, exc) from exc
    return ImportResult(inserted=len(new), overwritten=len(replaced), skipped_empty=skipped_empty)


# -- CLI ----------------------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    version = ModelRegistry(args.store, args.model_name).resolve(args.version)
    engine = db.create_db_engine(args.database_url)
    queue = export_queue(engine, version, args.limit)
    queue.to_csv(args.out, index=False)
    print(
        f"{len(queue)} descriptions ({int(queue['lines'].sum())} flagged lines) of model {version} to review, "
        f"most valuable first: {args.out} (fill {EXPERT_COLUMN}, then `python -m ml review import --file {args.out}`)"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    choices, skipped = read_choices(args.file)
    engine = db.create_db_engine(args.database_url)
    result = import_labels(engine, choices, labeled_by=args.labeled_by, overwrite=args.overwrite, skipped_empty=skipped)
    print(
        f"imported {result.inserted + result.overwritten} labels into {db.display_url(engine.url)} "
        f"({result.inserted} new, {result.overwritten} replaced, {result.skipped_empty} rows without a choice); "
        "next: `python -m ml refresh` then `python -m ml train --snapshot latest`"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("review", help="export flagged predictions for experts; import their labels")
    commands = parser.add_subparsers(dest="review_command", required=True, metavar="REVIEW_COMMAND")
    export = commands.add_parser("export", help="write the review queue as CSV, most valuable label first")
    add_database_argument(export)
    add_store_argument(export)
    add_model_name_argument(export)
    export.add_argument("--version", default="latest", help="the model version whose predictions to review")
    export.add_argument("--out", required=True, help="CSV file to write")
    export.add_argument("--limit", type=positive_int, default=None, help="at most this many descriptions")
    export.set_defaults(func=_export)

    imported = commands.add_parser("import", help="store the experts' choices (column expert_category) as labels")
    add_database_argument(imported)
    imported.add_argument("--file", required=True, help="the review CSV with expert_category filled in")
    imported.add_argument(
        "--labeled-by",
        default=DEFAULT_LABELED_BY,
        help=f"who the labels are attributed to (default {DEFAULT_LABELED_BY})",
    )
    imported.add_argument(
        "--overwrite", action="store_true", help="replace existing labels of the file's purchases (refused otherwise)"
    )
    imported.set_defaults(func=_import)
