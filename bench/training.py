"""Training benchmark: quality against the plain baseline, at known and at unseen facilities, fit time,
and the search speed-up.

Run: ``.venv/bin/python bench/training.py`` (add ``--skip-search`` to leave out the search timing).

Everything is measured side by side in one run; the baseline (:func:`ml.model.build_baseline`:
TF-IDF character 2–5-grams, one-hot department, log cost, ``LinearSVC(C=0.5)``) always beside the
model (``ml.model.fit_model``, default parameters):

1. the shipped split, as ``ml train`` estimates quality: both fitted on the rows outside the hash
   split, scored on its descriptions unseen in training — a known facility's new lines;
2. leave-one-facility-out (``ml evaluate --by department``): for each of the five facilities, both
   fitted on the other four and scored on its descriptions that none of the four lists (the rest
   would test memory: about 99.9 % of Wake Forest Baptist's and Davie's descriptions are also listed
   elsewhere), with the row counts of each fold, macro-F1 and coverage at 95 % accuracy, then the
   mean — the model on lines it has never seen, which is how it is used. Model choices are made on
   these folds;
3. the final fit on every row, as ``ml train`` registers it: the baseline in one process, the model
   in one process and on a 2-worker Dask cluster; the ratio of the Dask fit to the baseline's;
4. the hyper-parameter search (``ml.model.PARAM_GRID`` × grouped 3-fold CV) with ``n_jobs=1``
   against the same search on the 2-worker Dask cluster through joblib's Dask backend.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV, GroupKFold

from ml import schema
from ml.features import is_validation, normalise_column
from ml.jobs.evaluate import fit_recipes, leave_one_group_out, metrics, side_by_side
from ml.model import PARAM_GRID, build_pipeline, fit_model

DATA = Path(__file__).resolve().parents[1] / "data" / "purchases_labeled.csv.gz"


def timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - started


def shipped_split(frame: pd.DataFrame) -> pd.DataFrame:
    """Model and baseline fitted outside the hash split, scored on it (``ml train``'s estimate)."""
    mask = is_validation(frame[schema.DESCRIPTION])
    train, validation = frame[~mask], frame[mask]
    print(f"shipped split: fitted on {len(train)} rows, scored on {len(validation)} (descriptions unseen in training)")
    rows = []
    for name, fit in fit_recipes().items():
        model, seconds = timed(partial(fit, train))
        scores = metrics(validation[schema.CATEGORY], model.predict(validation[schema.FEATURE_COLUMNS]))
        rows.append({"recipe": name, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "fit_s": seconds})
    return pd.DataFrame(rows).set_index("recipe")


def search_seconds(frame: pd.DataFrame, client: Client | None) -> tuple[float, dict]:
    grid = GridSearchCV(
        build_pipeline(calibrated=False),
        PARAM_GRID,
        cv=GroupKFold(n_splits=3),
        scoring="f1_macro",
        n_jobs=-1 if client else 1,
        refit=False,
    )
    groups = normalise_column(frame[schema.DESCRIPTION])
    started = time.perf_counter()
    if client:
        with joblib.parallel_backend("dask", client=client):
            grid.fit(frame[schema.FEATURE_COLUMNS], frame[schema.CATEGORY], groups=groups)
    else:
        grid.fit(frame[schema.FEATURE_COLUMNS], frame[schema.CATEGORY], groups=groups)
    return time.perf_counter() - started, grid.best_params_


def _decimals(value: float) -> str:
    return f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--search-rows", type=int, default=12_000, help="rows for the search timing")
    args = parser.parse_args()
    pd.set_option("display.width", 200)

    frame = schema.coerce(schema.read_records(str(DATA)), labeled=True)
    split = shipped_split(frame)
    print(split.to_string(float_format=_decimals))
    gain = split.loc["model"] - split.loc["baseline"]
    print(f"model - baseline: accuracy {gain['accuracy']:+.4f}, macro-F1 {gain['macro_f1']:+.4f}\n")

    print(
        "leave one facility out: fitted on the other four facilities, scored on the held-out one's descriptions "
        "none of them lists (novel rows of all rows); coverage = most lines auto-accepted at 95 % accuracy"
    )
    folds = leave_one_group_out(frame, schema.DEPARTMENT, fit_recipes())
    table = side_by_side(folds)
    print(table.to_string(float_format=_decimals))
    mean = table.loc["mean"]
    print(
        f"model - baseline, mean over facilities: accuracy {mean['model accuracy'] - mean['baseline accuracy']:+.4f}, "
        f"macro-F1 {mean['model macro_f1'] - mean['baseline macro_f1']:+.4f}, "
        f"coverage at 95 % {mean['model coverage'] - mean['baseline coverage']:+.4f}\n"
    )

    recipes = fit_recipes()
    print(f"final fit on every row ({len(frame)}), as ml train registers it")
    _, baseline_s = timed(lambda: recipes["baseline"](frame))
    _, model_s = timed(lambda: recipes["model"](frame))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):

        def on_dask() -> Any:
            with joblib.parallel_backend("dask", client=client):
                return fit_model(frame, n_jobs=-1)

        _, dask_s = timed(on_dask)
        print(
            f"baseline one process {baseline_s:.1f}s, model one process {model_s:.1f}s, "
            f"model on 2-worker Dask {dask_s:.1f}s: Dask fit / baseline fit = {dask_s / baseline_s:.2f}\n"
        )
        if args.skip_search:
            return
        mask = is_validation(frame[schema.DESCRIPTION])
        sample = frame[~mask].sample(min(args.search_rows, int((~mask).sum())), random_state=0)
        n_fits = int(np.prod([len(v) for v in PARAM_GRID.values()])) * 3
        print(f"search: {n_fits} fits on {len(sample)} rows")
        serial, best = search_seconds(sample, None)
        parallel, best_dask = search_seconds(sample, client)
    print(f"n_jobs=1: {serial:.1f}s  2-worker Dask: {parallel:.1f}s  speed-up {serial / parallel:.2f}x")
    print(f"best parameters (both runs agree: {best == best_dask}): {best}")


if __name__ == "__main__":
    main()
