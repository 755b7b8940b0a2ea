"""``python -m ml evaluate``: quality of a stored model on a labelled file.

Accuracy alone flatters a model on skewed classes, so macro-F1 and the per-class report come
with it, plus a confusion-matrix plot of the most frequent classes for a human to read.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from ml import schema
from ml.registry import ModelRegistry
from ml.settings import add_model_name_argument, default_store

#: Classes shown in the confusion-matrix plot; the rest are pooled as "(other)".
PLOT_CLASSES = 25


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
    path.parent.mkdir(parents=True, exist_ok=True)
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


def run(args: argparse.Namespace) -> int:
    registry, version = registry_for(args.model, args.model_name)
    loaded = registry.load(args.version or version)
    frame, report = schema.clean(schema.read_records(args.data, encoding=args.encoding), labeled=True, max_bad_share=args.max_bad_share)
    predicted = loaded.pipeline.predict(frame[schema.FEATURE_COLUMNS])
    result = metrics(frame[schema.CATEGORY].to_numpy(), predicted)
    plot = plot_confusion(
        frame[schema.CATEGORY].to_numpy(dtype=object),
        np.asarray(predicted, dtype=object),
        Path(args.plot or f"var/reports/confusion-{loaded.version}.png"),
        f"{registry.name} {loaded.version} on {Path(args.data).name}",
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(report.summary())
    print(f"model {registry.name} {loaded.version}  rows {result['n_rows']}")
    print(f"accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}")
    print(classification_report(frame[schema.CATEGORY], predicted, zero_division=0))
    print(f"confusion matrix: {plot}")
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
    parser.add_argument("--plot", help="where to write the confusion-matrix PNG")
    parser.add_argument("--max-bad-share", type=float, default=0.05, help="refuse above this share of bad rows")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.set_defaults(func=run)
