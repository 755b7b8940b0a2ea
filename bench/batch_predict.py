"""Batch-predict throughput: a 2-worker local Dask cluster against plain single-process ``predict``.

Both sides run the same model on the same rows in partitions of the same size, in the same run:

- single process: ``ml.model.predict`` over the partitions, one after another, in this process;
- Dask: the partitions as parquet files, read by the workers (``read_parquet``) and predicted with
  ``map_partitions`` against the model scattered once to both workers, as the predict job does.

The database is left out on purpose (see ``bench/refresh_predict.py`` for the end-to-end job): this
measures the prediction stage. Peak RSS is each process's maximum resident size; the Dask cluster
is started fresh for every size, so the workers' figure is that size's prediction stage.

    python bench/batch_predict.py [--rows 1000000] [--rss-rows 250000] [--partition-rows 20000]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd
from batch_data import model, synthetic  # bench/ is on sys.path when run as a script
from distributed import Client, LocalCluster

from ml import schema
from ml.model import predict


def max_rss_mb() -> float:
    """This process image's peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that across exec, so a
    worker spawned by a big client would report the client's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def predict_counts(frame: pd.DataFrame, pipeline: Any) -> pd.DataFrame:
    """What a partition task returns: its size and how many rows fall under 0.5 confidence."""
    result = predict(pipeline, frame)
    return pd.DataFrame({"rows": [len(frame)], "flagged": [int(result.needs_review(0.5).sum())]})


def single_process(frame: pd.DataFrame, pipeline: Any, partition_rows: int) -> float:
    clock = time.perf_counter()
    for start in range(0, len(frame), partition_rows):
        predict(pipeline, frame.iloc[start : start + partition_rows])
    return time.perf_counter() - clock


def on_dask(files: list[str], pipeline: Any, workers: int) -> tuple[float, float, int]:
    """(seconds, max worker peak RSS in MB, rows) for the prediction stage on a fresh cluster."""
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        clock = time.perf_counter()
        shipped = client.scatter(pipeline, broadcast=True, hash=False)
        records = dd.read_parquet(files, columns=schema.FEATURE_COLUMNS)
        meta = pd.DataFrame({"rows": pd.Series(dtype="int64"), "flagged": pd.Series(dtype="int64")})
        counts = records.map_partitions(predict_counts, dask.delayed(shipped), meta=meta).compute()
        seconds = time.perf_counter() - clock
        peaks = client.run(max_rss_mb)
    return seconds, max(peaks.values()), int(counts["rows"].sum())


def write_partitions(frame: pd.DataFrame, directory: Path, partition_rows: int) -> list[str]:
    files = []
    for index, start in enumerate(range(0, len(frame), partition_rows)):
        path = directory / f"part-{index:05d}.parquet"
        frame.iloc[start : start + partition_rows].to_parquet(path, index=False)
        files.append(str(path))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rss-rows", type=int, default=250_000, help="the smaller size for the RSS comparison")
    parser.add_argument("--partition-rows", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", default=None, help="use LATEST of this store (default: var/bench/store)")
    args = parser.parse_args()

    _store, version, pipeline = model(args.store)
    frame = synthetic(args.rows)
    print(f"model {version}; {len(frame):,} synthetic rows; partitions of {args.partition_rows:,}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        small_dir, big_dir = Path(tmp, "small"), Path(tmp, "big")
        small_dir.mkdir()
        big_dir.mkdir()
        small_files = write_partitions(frame.iloc[: args.rss_rows], small_dir, args.partition_rows)
        big_files = write_partitions(frame, big_dir, args.partition_rows)

        small_seconds, small_rss, small_rows = on_dask(small_files, pipeline, args.workers)
        print(f"dask {args.workers} workers, {small_rows:,} rows: {small_seconds:.1f}s, peak RSS {small_rss:,.0f} MB")
        dask_seconds, big_rss, big_rows = on_dask(big_files, pipeline, args.workers)
        print(f"dask {args.workers} workers, {big_rows:,} rows: {dask_seconds:.1f}s, worker peak RSS {big_rss:,.0f} MB")

    before = max_rss_mb()
    single_seconds = single_process(frame[schema.FEATURE_COLUMNS], pipeline, args.partition_rows)
    print(
        f"single process, {len(frame):,} rows: {single_seconds:.1f}s (process peak RSS {max_rss_mb():,.0f} MB, "
        f"{before:,.0f} MB before predicting)"
    )

    dask_rate, single_rate = big_rows / dask_seconds, len(frame) / single_seconds
    print()
    print(
        f"load average (1/5/15 min) at the end: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} "
        f"{os.getloadavg()[2]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"throughput: dask {dask_rate:,.0f} rows/s vs single process {single_rate:,.0f} rows/s "
        f"= {dask_rate / single_rate:.2f}x (target >= 1.6x on 2 cores)"
    )
    print(
        f"worker peak RSS: {small_rss:,.0f} MB at {small_rows:,} rows, {big_rss:,.0f} MB at {big_rows:,} rows "
        f"(ratio {big_rss / small_rss:.2f})"
    )


if __name__ == "__main__":  # the guard Dask's process-based LocalCluster needs
    main()
