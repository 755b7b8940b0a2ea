"""``python -m ml demo``: the whole batch flow on embedded defaults, start to finish.

seed a SQLite file → refresh (snapshot) → train (local Dask cluster) → predict (same cluster) →
summary. It runs exactly the functions the CronJobs run; only the URLs are local. A share of the
shipped rows is seeded *without* its label so that they play the part of new purchases, and the
demo can show how often the model agrees with the experts on rows it was not trained on.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from ml import db, schema, snapshots
from ml.cli_types import float_between
from ml.cluster import dask_client
from ml.jobs.predict import PredictConfig, PredictSummary, run_predict
from ml.jobs.refresh import RefreshConfig, refresh
from ml.settings import add_dask_arguments, default_model_name

DEFAULT_DATA = "data/purchases_labeled.csv.gz"
DEFAULT_WORKDIR = "var/demo"
#: Categories listed in the summary; the rest are pooled.
SHOWN_CATEGORIES = 10

# soft_wrap: paths and commands are printed whole (to copy), never broken at the terminal width
console = Console(soft_wrap=True)


def agreement_with_experts(engine: sa.Engine, version: str) -> tuple[int, float, int, float]:
    """(labelled rows, agreement) and (unlabelled rows, flagged share) for one model version."""
    p, lab, pr = db.purchases, db.labels, db.predictions
    query = (
        sa.select(pr.c.category, pr.c.needs_review, lab.c.category.label("expert"))
        .join(p, p.c.id == pr.c.purchase_id)
        .outerjoin(lab, lab.c.purchase_id == p.c.id)
        .where(pr.c.model_version == version)
    )
    labelled = agree = unlabelled = flagged = 0
    with engine.connect() as conn:
        for category, needs_review, expert in conn.execute(query):
            if expert is None:
                unlabelled += 1
                flagged += bool(needs_review)
            else:
                labelled += 1
                agree += category == expert
    return labelled, agree / max(labelled, 1), unlabelled, flagged / max(unlabelled, 1)


def print_summary(summary: PredictSummary, engine: sa.Engine, database: str, store: str) -> None:
    table = Table(title=f"predicted categories (model {summary.model_version})")
    table.add_column("category")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    shown = list(summary.categories.items())[:SHOWN_CATEGORIES]
    for category, count in shown:
        table.add_row(category, f"{count:,}", f"{count / summary.predicted:.1%}")
    rest = summary.predicted - sum(count for _, count in shown)
    if rest:
        others = len(summary.categories) - len(shown)
        table.add_row(f"({others} other categories)", f"{rest:,}", f"{rest / summary.predicted:.1%}")
    console.print(table)
    labelled, agreement, unlabelled, flagged_new = agreement_with_experts(engine, summary.model_version)
    console.print(f"rows predicted: {summary.predicted:,} in {summary.seconds:.1f}s")
    console.print(
        f"flagged for review (confidence < {summary.review_threshold:g}): {summary.flagged:,} "
        f"({summary.flagged_share:.1%}); among the {unlabelled:,} unlabelled purchases: {flagged_new:.1%}"
    )
    console.print(
        f"agreement with the experts' labels on the {labelled:,} labelled purchases: {agreement:.1%} "
        "(the model was trained on them: a check that it learned, not of its quality)"
    )
    console.print("[bold]where the results are[/]")
    console.print(f"  predictions: table 'predictions' in {database}")
    console.print(
        f'    e.g. sqlite3 {database.removeprefix("sqlite:///")} "select purchase_id, category, confidence, '
        f"needs_review from predictions where model_version = '{summary.model_version}' limit 5\""
    )
    console.print(f"  snapshots:   {store}/training/    models: {store}/models/")
    console.print("[bold]what to try next[/]")
    console.print(f"  python -m ml models list --store {store}")
    console.print(
        f"  python -m ml models show latest --store {store}    # quality estimated on descriptions it never saw"
    )
    console.print(
        f"  python -m ml evaluate --data {DEFAULT_DATA} --by department    "
        "# each facility scored by a model trained on the others (minutes)"
    )
    console.print(f"  python -m ml serve --store {store}    # then POST records to http://127.0.0.1:8080/v1/classify")


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    workdir = Path(args.workdir)
    database_file, store = workdir / "purchases.db", str(workdir / "store")
    # The demo owns its directory: start from nothing, so every run shows the same first-time flow.
    for leftover in [*workdir.glob("purchases.db*"), workdir / "store"]:
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    database = f"sqlite:///{database_file}"
    name = default_model_name()

    console.rule("1/4 seed the database")
    engine = db.create_db_engine(database)
    db.init_db(engine)
    counts = db.seed(engine, schema.read_records(args.data), unlabeled_share=args.unlabeled_share)
    console.print(
        f"{counts['purchases']:,} purchases, {counts['labels']:,} with an expert label, in {database} "
        f"({args.unlabeled_share:.0%} left unlabelled as new purchases)"
    )

    console.rule("2/4 refresh: labelled purchases → training snapshot")
    snapshot = refresh(RefreshConfig(database, store))
    rows = snapshot.manifest["rows"]
    console.print(
        f"snapshot {snapshot.snapshot_id}: {rows['written']:,} rows (invalid {rows['invalid']}, "
        f"duplicates merged {rows['duplicates_removed']}, even splits left out {rows['ties_left_out']})"
    )

    from ml.jobs.train import train  # imported late: it pulls in the search machinery

    with dask_client(args.scheduler, timeout=args.dask_timeout) as client:
        address = str(client.scheduler_info()["address"])
        console.rule(f"3/4 train on Dask ({address})")
        frame, manifest = snapshots.load_snapshot(store, snapshot.snapshot_id)
        trained = train(
            frame,
            store=store,
            name=name,
            source=f"{store} snapshot",
            snapshot=manifest["snapshot_id"],
            run_search=args.search,
            scheduler=address,
            dask_timeout=args.dask_timeout,
        )
        console.print(f"model {trained.version}: validation macro-F1 {trained.metrics['macro_f1']:.3f}")

        console.rule("4/4 predict every purchase on Dask")
        summary = run_predict(PredictConfig(database, store, name), client=client)
    console.rule("summary")
    print_summary(summary, engine, database, store)
    console.print(f"demo finished in {time.perf_counter() - started:.0f}s")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the batch flow on embedded defaults: seed → refresh → train → predict → summary"
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"labelled purchases file (default {DEFAULT_DATA})")
    parser.add_argument(
        "--workdir", default=DEFAULT_WORKDIR, help=f"where the SQLite file and the store go (default {DEFAULT_WORKDIR})"
    )
    parser.add_argument(
        "--unlabeled-share",
        # below 1: a demo with no labelled purchase has nothing to train on
        type=float_between(0.0, 1.0, high_inclusive=False),
        default=0.2,
        help="share of purchases seeded without their label (default 0.2)",
    )
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run the hyper-parameter search on Dask (minutes; off: known-good parameters)",
    )
    add_dask_arguments(parser, timeout=60.0)
    parser.set_defaults(func=run_demo)
