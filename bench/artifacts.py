"""Model artifact formats side by side: size, write and load time of joblib (what the store used to
hold) and skops (what it holds now), for the same fitted pipeline.

    .venv/bin/python bench/artifacts.py                    # fits on data/purchases_labeled.csv.gz
    .venv/bin/python bench/artifacts.py --rows 5000        # a sample, for a quick look
    .venv/bin/python bench/artifacts.py --store var/store  # or an existing store's LATEST

joblib is written as the registry wrote it (``compress=3``) and loaded with ``joblib.load``; skops is
written and loaded by :mod:`ml.artifacts` exactly as the registry does (the trusted-type check on the
schema, then skops' own audited load). Each load is timed ``--repeats`` times; the table shows the
median and the skops/joblib ratio.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml import artifacts  # noqa: E402
from ml.model import fit_model  # noqa: E402
from ml.registry import ModelRegistry  # noqa: E402
from ml.schema import coerce, read_records  # noqa: E402

DATA = ROOT / "data" / "purchases_labeled.csv.gz"


def timed(func: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def joblib_dumps(pipeline: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    return buffer.getvalue()


def pipeline_to_measure(args: argparse.Namespace) -> tuple[Any, str]:
    if args.store:
        loaded = ModelRegistry(args.store).load()
        return loaded.pipeline, f"LATEST {loaded.version} of {args.store}"
    frame = coerce(read_records(str(DATA)), labeled=True)
    if args.rows:
        frame = frame.sample(n=min(args.rows, len(frame)), random_state=0)
    started = time.perf_counter()
    pipeline = fit_model(frame)
    return pipeline, f"fitted on {len(frame)} rows of {DATA.name} in {time.perf_counter() - started:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="measure this store's LATEST instead of fitting a model")
    parser.add_argument("--rows", type=int, default=0, help="fit on a sample of this many rows (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="loads timed per format (median shown)")
    args = parser.parse_args()
    pipeline, source = pipeline_to_measure(args)
    vocabulary = sum(len(v.vocabulary_) for _, v in pipeline[0].named_transformers_["description"][-1].transformer_list)
    print(f"model: {source}; {vocabulary} n-gram vocabulary entries")

    rows = []
    for name, dump, load in (
        ("joblib", joblib_dumps, lambda data: joblib.load(io.BytesIO(data))),
        (
            "skops",
            artifacts.dumps,
            lambda data: artifacts.loads(data, artifacts.SKOPS, allow_pickle=False, label="bench"),
        ),
    ):
        write_s, data = timed(lambda dump=dump: dump(pipeline), 1)
        load_s, _ = timed(lambda load=load, data=data: load(data), args.repeats)
        rows.append((name, len(data), write_s, load_s))

    (_, j_size, j_write, j_load), (_, s_size, s_write, s_load) = rows
    print(f"\n{'format':<8} {'size MB':>9} {'write s':>9} {'load s':>9}")
    for name, size, write_s, load_s in rows:
        print(f"{name:<8} {size / 1e6:>9.2f} {write_s:>9.2f} {load_s:>9.3f}")
    print(f"{'skops/joblib':<8} {s_size / j_size:>5.2f}x {s_write / j_write:>8.1f}x {s_load / j_load:>8.1f}x")


if __name__ == "__main__":
    main()
