"""End-to-end wall time of the refresh and predict jobs, with the database write rate.

For each size (the shipped sample, then N synthetic rows sampled from it with noise) the script
seeds a fresh database, runs ``refresh`` (database → validated, de-duplicated parquet snapshot) and
``predict`` (database → 2-worker local Dask cluster → predictions table) exactly as the CLI does,
and prints wall times, rows/s and the rate of the database writes (seed inserts; prediction writes
measured inside the tasks, summed over writers).

    python bench/refresh_predict.py [--rows 1000000] [--database-url URL]   # default: a SQLite file
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from batch_data import model, shipped, synthetic  # bench/ is on sys.path when run as a script

from ml import db
from ml.cluster import dask_client
from ml.jobs.predict import PredictConfig, run_predict
from ml.jobs.refresh import RefreshConfig, refresh


def run_size(label: str, frame: pd.DataFrame, database_url: str, store: str, workdir: Path, workers: int) -> None:
    engine = db.create_db_engine(database_url)
    db.metadata.drop_all(engine)
    db.init_db(engine)
    clock = time.perf_counter()
    db.seed(engine, frame)
    seed_seconds = time.perf_counter() - clock

    snapshot_store = str(workdir / f"snapshots-{label}")
    clock = time.perf_counter()
    result = refresh(RefreshConfig(database_url, snapshot_store))
    refresh_seconds = time.perf_counter() - clock

    clock = time.perf_counter()
    with dask_client(local_workers=workers, timeout=120) as client:
        startup = time.perf_counter() - clock
        summary = run_predict(PredictConfig(database_url, store, "purchase-classifier"), client=client)
    predict_seconds = time.perf_counter() - clock
    engine.dispose()

    rows = len(frame)
    print(f"--- {label}: {rows:,} purchases in {db.display_url(database_url)}")
    print(f"seed:    {seed_seconds:7.1f}s  {rows / seed_seconds:9,.0f} rows/s written (purchases + labels)")
    print(
        f"refresh: {refresh_seconds:7.1f}s  {rows / refresh_seconds:9,.0f} rows/s "
        f"({result.manifest['rows']['written']:,} rows in {len(result.manifest['files'])} parquet parts)"
    )
    print(
        f"predict: {predict_seconds:7.1f}s  {summary.predicted / predict_seconds:9,.0f} rows/s wall "
        f"(incl. {startup:.1f}s cluster start; stage {summary.seconds:.1f}s = "
        f"{summary.predicted / summary.seconds:,.0f} rows/s; {summary.partitions} partitions)"
    )
    write_rate = summary.predicted / summary.write_seconds if summary.write_seconds else 0.0
    print(
        f"         prediction writes: {summary.write_seconds:.1f}s summed over {workers} writers = "
        f"{write_rate:,.0f} rows/s per writer, ~{write_rate * workers:,.0f} rows/s combined"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows for the large run (0: skip)")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    parser.add_argument("--store", default=None, help="model store (default: var/bench/store, fitted once)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    store, version, _ = model(args.store)
    print(f"model {version} from {store}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        url = args.database_url or f"sqlite:///{workdir / 'purchases.db'}"
        run_size("shipped", shipped(), url, store, workdir, args.workers)
        if args.rows:
            run_size(f"synthetic-{args.rows}", synthetic(args.rows), url, store, workdir, args.workers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # the guard Dask's process-based LocalCluster needs
    main()
