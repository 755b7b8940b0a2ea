"""``python -m ml evaluate``: quality of a stored model on a labelled file, or of the training recipe
at facilities it has never seen.

Accuracy alone flatters a model on skewed classes, so macro-F1 and the per-class report come
with it, plus a confusion-matrix plot of the most frequent classes for a human to read.

The model is used at facilities whose departments, price lists and wording it has not seen, and
near-duplicate lines across a system's facilities make any split within the data optimistic.
``--by department`` therefore trains on every facility but one and scores the one left out, for
each in turn, beside the plain baseline (:func:`ml.model.build_baseline`) on the same folds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from ml import schema
from ml.cli_types import output_file, positive_int, share
from ml.decisions import (
    DEFAULT_REVIEW_THRESHOLD,
    DEFAULT_TARGET_ACCURACY,
    coverage_at,
    describe,
    evaluation,
    finite,
    line_confidence,
    review_threshold,
)
from ml.errors import BadInputError
from ml.features import normalise_column
from ml.model import Predictions, predict
from ml.registry import ModelRegistry
from ml.settings import add_model_name_argument, default_store

#: Classes shown in the confusion-matrix plot; the rest are pooled as "(other)".
PLOT_CLASSES = 25
#: Rows read, validated and predicted at a time: the text of at most this many rows is in memory.
DEFAULT_CHUNK_ROWS = 20_000


def metrics(y_true: pd.Series | np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 and the per-class report (precision, recall, F1, support)."""
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_class = {
        label: {key: float(value) for key, value in scores.items()}
        for label, scores in report.items()
        if label not in {"accuracy", "macro avg", "weighted avg"}
    }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "n_rows": len(y_true),
        "per_class": per_class,
    }


#: A recipe under evaluation: labelled rows in, something with ``predict(frame)`` out.
Fit = Callable[[pd.DataFrame], Any]


def leave_one_group_out(
    frame: pd.DataFrame,
    column: str,
    fits: dict[str, Fit],
    target: float = DEFAULT_TARGET_ACCURACY,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Fit each recipe on every ``column`` value but one, score it on that one's novel descriptions.

    Only the held-out rows whose normalised description appears nowhere in the training folds are
    scored: most of a facility's lines are listed by another one too, and scoring those would test
    memory, not the model at a new place. One row per (held-out, recipe), columns ``held_out``,
    ``recipe``, ``rows`` (scored: novel), ``fold_rows`` (all held-out rows), ``accuracy``,
    ``macro_f1``, ``coverage`` (the most lines a threshold accepts at ``target`` accuracy), ``fit_s``;
    a fold without novel rows has no scores. A category the training folds never saw counts against
    every recipe alike. ``progress`` gets a line as each held-out value starts and ends (each costs
    a full fit per recipe, minutes on the shipped data).
    """
    groups = sorted(frame[column].unique())
    if len(groups) < 2:
        raise BadInputError(f"leave-one-out by {column} needs at least two distinct values of {column}, got {groups}")
    rows = []
    for number, group in enumerate(groups, start=1):
        held = (frame[column] == group).to_numpy()
        train, fold = frame[~held], frame[held]
        if progress:
            progress(f"[{number}/{len(groups)}] {group}: fitting on {len(train)} rows, scoring {len(fold)}")
        seen = set(normalise_column(train[schema.DESCRIPTION]))
        test = fold[~pd.Series(normalise_column(fold[schema.DESCRIPTION])).isin(seen).to_numpy()]
        for name, fit in fits.items():
            started = time.perf_counter()
            model = fit(train)
            seconds = time.perf_counter() - started
            scores = {"accuracy": np.nan, "macro_f1": np.nan, "coverage": np.nan}
            if len(test):
                truth = test[schema.CATEGORY].to_numpy(dtype=object)
                predicted, confidence = line_confidence(model, test[schema.FEATURE_COLUMNS])
                scores = {
                    **metrics(truth, predicted),
                    "coverage": coverage_at(confidence, truth == np.asarray(predicted, dtype=object), target),
                }
            rows.append(
                {
                    "held_out": group,
                    "recipe": name,
                    "rows": len(test),
                    "fold_rows": len(fold),
                    "accuracy": scores["accuracy"],
                    "macro_f1": scores["macro_f1"],
                    "coverage": scores["coverage"],
                    "fit_s": seconds,
                }
            )
        if progress:
            done = rows[-len(fits) :]
            figures = ", ".join(f"{row['recipe']} macro-F1 {row['macro_f1']:.3f}" for row in done)
            progress(f"[{number}/{len(groups)}] {group}: {figures} ({sum(row['fit_s'] for row in done):.0f}s)")
    return pd.DataFrame(rows)


def side_by_side(results: pd.DataFrame) -> pd.DataFrame:
    """:func:`leave_one_group_out`'s rows as one line per held-out group and their mean, recipes side by side."""
    recipes = results["recipe"].unique()
    wide = pd.DataFrame(
        {
            f"{recipe} {score}": results[results["recipe"] == recipe].set_index("held_out")[score]
            for score in ("accuracy", "macro_f1", "coverage")
            for recipe in recipes
        }
    )
    wide.loc["mean"] = wide.mean()
    counts = results.groupby("held_out")[["fold_rows", "rows"]].first()
    wide.insert(0, "novel rows", [*counts["rows"], ""])  # a mean has no row count
    wide.insert(0, "rows", [*counts["fold_rows"], ""])
    return wide


def fit_recipes() -> dict[str, Fit]:
    """The model as ``ml train`` fits it (default parameters, one process) and the baseline."""
    from ml.model import build_baseline, fit_model

    return {
        "model": fit_model,
        "baseline": lambda train: build_baseline().fit(train[schema.FEATURE_COLUMNS], train[schema.CATEGORY]),
    }


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix of the most frequent true classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = pd.Series(y_true).value_counts().index[:PLOT_CLASSES].tolist()
    other = "(other)"
    true = np.where(np.isin(y_true, top), y_true, other)
    pred = np.where(np.isin(y_pred, top), y_pred, other)
    labels = [*top, other]
    matrix = confusion_matrix(true, pred, labels=labels).astype(float)
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    short = [label if len(label) <= 40 else label[:37] + "…" for label in labels]
    fig, ax = plt.subplots(figsize=(14, 12))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), short, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_VERSION_DIR = re.compile(r"^(?P<store>.+?)/models/(?P<name>[^/]+)/(?P<version>[^/]+)/?$")


def registry_for(model: str, name: str) -> tuple[ModelRegistry, str]:
    """``--model`` is a store URL (its LATEST) or a version directory ``<store>/models/<name>/<v>``."""
    match = _VERSION_DIR.match(model)
    if match:
        return ModelRegistry(match["store"], match["name"]), match["version"]
    return ModelRegistry(model, name), "latest"


def predict_file(
    pipeline: Any, path: str, encoding: str, chunk_rows: int, max_bad_share: float
) -> tuple[schema.ValidationReport, np.ndarray, Predictions]:
    """Validate and predict a labelled file in chunks: (validation report, true labels, predictions).

    Only the per-row results are kept (about 60 bytes a row: labels and categories point at one
    shared string per class), never the rows' text, so memory no longer grows with the descriptions.
    Ids are checked for duplicates across chunks through their 8-byte hashes.
    """
    n_rows = 0
    bad: dict[str, list[str]] = {}
    bad_positions: list[int] = []
    seen_ids = np.zeros(0, dtype=np.uint64)
    labels: dict[str, str] = {}
    truths: list[np.ndarray] = []
    parts: list[Predictions] = []
    for chunk in schema.read_record_chunks(path, encoding, chunk_rows):
        report = schema.validate(chunk, labeled=True)
        typed = schema.coerce(chunk, labeled=True)
        rejected = report.bad_rows.copy()
        for reason, ids in report.bad.items():
            bad.setdefault(reason, []).extend(ids)
        present = (typed[schema.ID].str.strip() != "").to_numpy()
        hashes = pd.util.hash_pandas_object(typed[schema.ID], index=False).to_numpy()
        again = present & ~rejected & np.isin(hashes, seen_ids)
        if again.any():
            bad.setdefault("id is duplicated", []).extend(typed[schema.ID][again].astype(str))
            rejected |= again
        seen_ids = np.union1d(seen_ids, hashes[present])
        bad_positions.extend((n_rows + np.flatnonzero(rejected)).tolist())
        n_rows += len(chunk)
        good = typed[~rejected]
        if len(good):
            truths.append(np.array([labels.setdefault(t, t) for t in good[schema.CATEGORY]], dtype=object))
            parts.append(predict(pipeline, good[schema.FEATURE_COLUMNS]))
    bad_rows = np.zeros(n_rows, dtype=bool)
    bad_rows[bad_positions] = True
    report = schema.ValidationReport(n_rows=n_rows, bad=bad, bad_rows=bad_rows)
    if report.bad_share > max_bad_share:
        raise BadInputError(
            f"{report.summary()}\nrefusing: bad-row share {report.bad_share:.1%} exceeds the limit "
            f"{max_bad_share:.1%} (--max-bad-share)"
        )
    if not parts:
        raise BadInputError(f"no valid labelled rows in {path}")
    predictions = Predictions(
        category=np.concatenate([p.category for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
        top_categories=np.concatenate([p.top_categories for p in parts]),
        top_probabilities=np.concatenate([p.top_probabilities for p in parts]),
    )
    return report, np.concatenate(truths), predictions


def run(args: argparse.Namespace) -> int:
    if args.by:
        raw = schema.read_records(args.data, encoding=args.encoding)
        frame, report = schema.clean(raw, labeled=True, max_bad_share=args.max_bad_share)
        return _run_leave_one_out(frame, report, args)
    registry, version = registry_for(args.model, args.model_name)
    loaded = registry.load(args.version or version)
    report, truth, predictions = predict_file(
        loaded.pipeline, args.data, args.encoding, args.chunk_rows, args.max_bad_share
    )
    predicted = predictions.category
    result = metrics(truth, predicted)
    threshold, source = review_threshold(loaded.metadata, None, DEFAULT_REVIEW_THRESHOLD)
    result.update(evaluation(truth, predictions, threshold, source))
    plot = None
    if args.plot:
        plot = plot_confusion(
            truth,
            np.asarray(predicted, dtype=object),
            args.plot,
            f"{registry.name} {loaded.version} on {Path(args.data).name}",
        )
    if args.json:
        print(json.dumps(result))
        return 0
    print(report.summary())
    print(f"model {registry.name} {loaded.version}  rows {result['n_rows']}")
    print(f"accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}")
    print("\n".join(describe(result["at_threshold"])))
    print(classification_report(truth, predicted, zero_division=0))
    if plot:
        print(f"confusion matrix: {plot}")
    return 0


def _run_leave_one_out(frame: pd.DataFrame, report: schema.ValidationReport, args: argparse.Namespace) -> int:
    if args.by not in schema.FEATURE_COLUMNS or args.by == schema.DESCRIPTION:
        raise BadInputError(
            f"--by must be one of {schema.CONTRACT}, {schema.DEPARTMENT}, {schema.COST}; got {args.by!r}"
        )
    print(
        f"leave one {args.by} out: {frame[args.by].nunique()} folds, each a fit of the model and of the baseline",
        file=sys.stderr,
    )
    results = leave_one_group_out(
        frame, args.by, fit_recipes(), progress=lambda line: print(line, file=sys.stderr, flush=True)
    )
    table = side_by_side(results)
    if args.json:
        folds = results.drop(columns="fit_s").to_dict(orient="records")
        mean = table.loc["mean"].drop(["rows", "novel rows"]).to_dict()
        print(json.dumps(finite({"by": args.by, "folds": folds, "mean": mean})))
        return 0
    print(report.summary())
    print(
        f"leave one {args.by} out: trained on the others, scored on the held-out one's novel rows (descriptions none "
        "of the others lists); coverage: the most lines a threshold auto-accepts at 95 % accuracy"
    )
    print(table.to_string(float_format=lambda value: f"{value:.4f}", na_rep=""))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="accuracy, macro-F1 and confusion matrix of a model")
    parser.add_argument(
        "--model",
        default=default_store(),
        help="store URL (evaluates its LATEST) or a version directory <store>/models/<name>/<version>",
    )
    add_model_name_argument(parser)
    parser.add_argument("--version", help="version to evaluate (default: LATEST or the one in --model)")
    parser.add_argument("--data", required=True, help="labelled CSV or parquet (path or URL)")
    schema.add_encoding_argument(parser)
    parser.add_argument(
        "--plot", type=output_file, help="write the confusion-matrix PNG to this file (its directory must exist)"
    )
    parser.add_argument("--max-bad-share", type=share, default=0.05, help="refuse above this share of bad rows")
    parser.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"rows read and predicted at a time; bounds memory (default {DEFAULT_CHUNK_ROWS})",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument(
        "--by",
        choices=[schema.DEPARTMENT, schema.CONTRACT],
        help="instead of a stored model, evaluate the training recipe leaving one value of the column out at a time "
        "(e.g. department: each facility scored by a model trained on the others), beside the plain baseline",
    )
    parser.set_defaults(func=run)
