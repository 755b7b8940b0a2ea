"""Training benchmark: quality and fit time against the plain baseline, and the search speed-up.

Run: ``.venv/bin/python bench/training.py`` (add ``--skip-search`` for the quality part only).

Everything is measured side by side in one run, on the shipped data's own hash split (validation
= descriptions never seen in training):

1. the baseline — TF-IDF character 2–5-grams on the description, one-hot department, log cost,
   ``LinearSVC(C=0.5)`` — one fit;
2. this project's final model (``ml.model.fit_model``: calibrated, default parameters), in one
   process and on a 2-worker Dask cluster the way ``ml train`` fits it;
3. the hyper-parameter search (``ml.model.PARAM_GRID`` × grouped 3-fold CV) with ``n_jobs=1``
   against the same search on a 2-worker local Dask cluster through joblib's Dask backend.

One split is one draw of which descriptions are unseen, and macro-F1 over rare categories moves
with the draw. ``--extra-splits N`` (default 4) repeats the quality comparison of 1 and 2 (one
process) on N other hash splits, so a gain can be told apart from the luck of one split. Those
draws are numbered from :data:`HELD_OUT_DRAWS` up, a range no model choice is made on, so they are
held out as the shipped split is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from ml import schema
from ml.features import is_validation, normalise_column
from ml.model import PARAM_GRID, build_pipeline, fit_model

DATA = Path(__file__).resolve().parents[1] / "data" / "purchases_labeled.csv.gz"
#: Model choices are compared on re-drawn splits numbered below this (so far draws 1–73 were used);
#: the benchmark's extra splits start here, so no choice has seen them.
HELD_OUT_DRAWS = 1000


def _log_cost(values: pd.DataFrame) -> np.ndarray:
    return np.log1p(np.nan_to_num(np.asarray(values, dtype="float64")))


def baseline() -> Pipeline:
    features = ColumnTransformer(
        [
            ("description", TfidfVectorizer(analyzer="char", ngram_range=(2, 5)), schema.DESCRIPTION),
            ("department", OneHotEncoder(handle_unknown="ignore"), [schema.DEPARTMENT]),
            ("cost", make_pipeline(FunctionTransformer(_log_cost), StandardScaler()), [schema.COST]),
        ]
    )
    return Pipeline([("features", features), ("classifier", LinearSVC(C=0.5))])


def scored(name: str, fit, validation: pd.DataFrame) -> dict[str, object]:
    started = time.perf_counter()
    model = fit()
    seconds = time.perf_counter() - started
    predicted = model.predict(validation[schema.FEATURE_COLUMNS])
    truth = validation[schema.CATEGORY]
    return {
        "model": name,
        "fit_s": round(seconds, 1),
        "accuracy": round(accuracy_score(truth, predicted), 4),
        "macro_f1": round(f1_score(truth, predicted, average="macro", zero_division=0), 4),
    }


def redrawn_split(descriptions: pd.Series, draw: int) -> np.ndarray:
    """The hash split with a different hash per ``draw``: the same text still stays on one side."""
    return is_validation(f"SPLIT{draw} " + descriptions.fillna(""))


def baseline_and_project(train: pd.DataFrame, validation: pd.DataFrame) -> list[dict[str, object]]:
    """The baseline and this model, each fitted in one process on ``train``, scored on ``validation``."""
    return [
        scored("baseline, one process", lambda: baseline().fit(train, train.category), validation),
        scored("project final fit, one process", lambda: fit_model(train), validation),
    ]


def gain_on_split(frame: pd.DataFrame, mask: np.ndarray) -> dict[str, object]:
    """Baseline against this model (one process) on one train/validation split."""
    base, project = baseline_and_project(frame[~mask], frame[mask])
    return {
        "validation rows": int(mask.sum()),
        "baseline accuracy": base["accuracy"],
        "baseline macro-F1": base["macro_f1"],
        "project accuracy": project["accuracy"],
        "project macro-F1": project["macro_f1"],
        "macro-F1 gain": round(project["macro_f1"] - base["macro_f1"], 4),
        "accuracy gain": round(project["accuracy"] - base["accuracy"], 4),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--search-rows", type=int, default=12_000, help="rows for the search timing")
    parser.add_argument("--extra-splits", type=int, default=4, help="other hash splits for the quality comparison")
    args = parser.parse_args()

    frame = schema.coerce(schema.read_records(str(DATA)), labeled=True)
    mask = is_validation(frame[schema.DESCRIPTION])
    train, validation = frame[~mask], frame[mask]
    print(f"train {len(train)} rows, validation {len(validation)} rows (unseen descriptions)")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):

        def on_dask() -> Pipeline:
            with joblib.parallel_backend("dask", client=client):
                return fit_model(train, n_jobs=-1)

        rows = [
            *baseline_and_project(train, validation),
            scored("project final fit, 2-worker Dask (as ml train)", on_dask, validation),
        ]
        print(pd.DataFrame(rows).to_string(index=False))
        base, project, dask = rows
        print(
            f"macro-F1 gain {project['macro_f1'] - base['macro_f1']:+.4f}, "
            f"accuracy gain {project['accuracy'] - base['accuracy']:+.4f}; fit time / baseline: "
            f"{project['fit_s'] / base['fit_s']:.2f} one process, {dask['fit_s'] / base['fit_s']:.2f} on Dask"
        )
        if args.extra_splits:
            draws = range(HELD_OUT_DRAWS, HELD_OUT_DRAWS + args.extra_splits)
            print(f"quality on hash splits {draws.start}-{draws.stop - 1}, held out (one process each):")
            redrawn = pd.DataFrame(
                [{"draw": d, **gain_on_split(frame, redrawn_split(frame[schema.DESCRIPTION], d))} for d in draws]
            )
            print(redrawn.to_string(index=False))
            print(
                f"mean gain over those splits: macro-F1 {redrawn['macro-F1 gain'].mean():+.4f} "
                f"({(redrawn['macro-F1 gain'] > 0).sum()} of {len(redrawn)} up), "
                f"accuracy {redrawn['accuracy gain'].mean():+.4f}"
            )
        if args.skip_search:
            return
        sample = train.sample(min(args.search_rows, len(train)), random_state=0)
        n_fits = int(np.prod([len(v) for v in PARAM_GRID.values()])) * 3
        print(f"search: {n_fits} fits on {len(sample)} rows")
        serial, best = search_seconds(sample, None)
        parallel, best_dask = search_seconds(sample, client)
    print(f"n_jobs=1: {serial:.1f}s  2-worker Dask: {parallel:.1f}s  speed-up {serial / parallel:.2f}x")
    print(f"best parameters (both runs agree: {best == best_dask}): {best}")


if __name__ == "__main__":
    main()
