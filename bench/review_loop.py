"""Review-loop benchmark: does labelling the queue's lines teach the model more than labelling lines at random?

Run: ``.venv/bin/python bench/review_loop.py`` (about 10 minutes on 2 busy cores; ``--budgets`` to change).

Set-up, on the shipped data:

- **new descriptions**: a share (``--pool-share``, 30 %) of the distinct normalised descriptions is
  taken out of training entirely, at every facility — lines the model has never seen, as a new
  supplier's catalogue or a new facility's wording would be. (A single facility's own descriptions
  are too few here: at most 949 rows, at Lexington.) The pool is split by description into a
  *queue* part (two thirds: what the model flags and experts could label) and an *evaluation* part
  (the rest: never labelled, scored at every step);
- **the base model** is fitted as ``ml train`` fits it (default parameters, no search) on every
  other row, and predicts the queue part;
- **experts label** 100, 500 and 1,000 lines of the queue part, with their true category, either
  in the order ``ml review export`` writes them (:func:`ml.review.review_queue`: one line per
  description, ``(1 - confidence) × lines`` first) or in random order (random lines); after each,
  the model is refitted on the base rows plus the labelled lines;
- each model is scored on the evaluation part: macro-F1, accuracy, and coverage at 95 % accuracy
  (the most lines a threshold could auto-accept at that accuracy, :func:`ml.decisions.coverage_at`).

Every fit runs its SVMs on a 2-worker local Dask cluster, as ``ml train`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster
from sklearn.metrics import accuracy_score, f1_score

from ml import schema
from ml.decisions import DEFAULT_TARGET_ACCURACY, coverage_at
from ml.features import normalise_column
from ml.model import fit_model, predict
from ml.review import review_queue

DATA = Path(__file__).resolve().parents[1] / "data" / "purchases_labeled.csv.gz"


def bucket(keys: np.ndarray, salt: str) -> np.ndarray:
    """A stable number in [0, 1) per key, so the same description always lands on the same side."""
    return np.array(
        [int.from_bytes(hashlib.blake2b((salt + k).encode(), digest_size=8).digest(), "big") / 2**64 for k in keys]
    )


def score(model: object, rows: pd.DataFrame) -> dict[str, float]:
    result = predict(model, rows[schema.FEATURE_COLUMNS])
    truth = rows[schema.CATEGORY].to_numpy(dtype=object)
    correct = result.category == truth
    return {
        "macro_f1": float(f1_score(truth, result.category, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(truth, result.category)),
        "coverage_95": coverage_at(result.confidence, correct, DEFAULT_TARGET_ACCURACY),
    }


def queue_order(model: object, pool: pd.DataFrame) -> pd.Index:
    """The pool's lines in ``ml review export``'s order (one per description)."""
    result = predict(model, pool[schema.FEATURE_COLUMNS])
    flagged = pd.DataFrame(
        {
            "purchase_id": pool.index.astype(str),
            "description": pool[schema.DESCRIPTION].to_numpy(),
            "cost": pool[schema.COST].to_numpy(),
            "contract": pool[schema.CONTRACT].to_numpy(),
            "department": pool[schema.DEPARTMENT].to_numpy(),
            "category": result.category,
            "confidence": result.confidence,
            "top_categories": list(result.top_categories),
            "top_probabilities": list(result.top_probabilities),
        }
    )
    return pd.Index(review_queue(flagged)["purchase_id"].astype(int))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--pool-share", type=float, default=0.3, help="share of descriptions new to training")
    parser.add_argument("--seed", type=int, default=0, help="random order's seed")
    args = parser.parse_args()

    frame = schema.coerce(schema.read_records(str(DATA)), labeled=True)
    keys = normalise_column(frame[schema.DESCRIPTION])
    draw = bucket(keys, "review-loop")
    in_pool = draw < args.pool_share
    base, pool = frame[~in_pool], frame[in_pool]
    queue_part = pool[draw[in_pool] < args.pool_share * 2 / 3]
    evaluation = pool[draw[in_pool] >= args.pool_share * 2 / 3]
    print(
        f"{len(frame)} rows: base training {len(base)}; descriptions new to training: {len(pool)} rows "
        f"({pd.Series(keys[in_pool]).nunique()} descriptions) = queue part {len(queue_part)} "
        f"+ evaluation {len(evaluation)}"
    )
    unseen = set(evaluation[schema.CATEGORY]) - set(base[schema.CATEGORY])
    print(f"evaluation rows whose category the base training lacks: {evaluation[schema.CATEGORY].isin(unseen).sum()}")

    rows = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
        joblib.parallel_backend("dask", client=client),
    ):

        def fitted(train: pd.DataFrame) -> tuple[object, float]:
            started = time.perf_counter()
            model = fit_model(train, n_jobs=-1)
            return model, time.perf_counter() - started

        model, seconds = fitted(base)
        rows.append({"order": "none", "labelled": 0, **score(model, evaluation), "fit_s": seconds})
        print(f"base model: {rows[-1]}", flush=True)
        orders = {
            "queue": queue_order(model, queue_part),
            "random": pd.Index(np.random.default_rng(args.seed).permutation(queue_part.index)),
        }
        for budget in args.budgets:
            for name, order in orders.items():
                labelled = queue_part.loc[order[:budget]]
                model, seconds = fitted(pd.concat([base, labelled]))
                rows.append({"order": name, "labelled": len(labelled), **score(model, evaluation), "fit_s": seconds})
                print(f"{name} order, {len(labelled)} lines labelled: {rows[-1]}", flush=True)

    table = pd.DataFrame(rows)
    print(f"\nscored on {len(evaluation)} evaluation rows (descriptions new to training, never labelled)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    wide = table[table["order"] != "none"].pivot(index="labelled", columns="order")
    gain = pd.DataFrame(
        {
            f"queue - random {score_name}": wide[(score_name, "queue")] - wide[(score_name, "random")]
            for score_name in ("macro_f1", "accuracy", "coverage_95")
        }
    )
    print("\n" + gain.to_string(float_format=lambda v: f"{v:+.4f}"))


if __name__ == "__main__":
    main()
