"""``python -m ml models report VERSION --out DIR``: one self-contained HTML page about a model version.

Everything is drawn from the version's metadata, written at training (:func:`ml.decisions.train_record`
and, with ``ml train --report``, :func:`novelty_folds`), so a report can be made any time later
without the data or the model. The five charts are PNGs embedded as base64, so the page is one file
that can be mailed or attached to a ticket:

1. coverage against accuracy as the review threshold moves, the chosen threshold marked;
2. the reliability diagram: stated confidence against observed accuracy;
3. each category's F1 against its training rows (where macro-F1 is lost);
4. the most-confused category pairs;
5. the facility folds on novel descriptions, the model beside the plain baseline.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
from functools import partial
from typing import Any

import pandas as pd

from ml import schema
from ml.decisions import finite
from ml.registry import ModelRegistry, open_store, write_atomically

#: The charts, in page order: (key, title).
CHARTS = (
    ("coverage", "Coverage and accuracy of auto-accepted lines"),
    ("reliability", "Reliability: confidence against accuracy"),
    ("categories", "Per-category F1 against training rows"),
    ("confusions", "Most-confused category pairs"),
    ("novelty", "Facility folds on novel descriptions: model and baseline"),
)
REPORT_FILE = "report.html"


def novelty_folds(frame: pd.DataFrame, target: float) -> dict[str, Any] | None:
    """Leave-one-facility-out on novel descriptions (:func:`ml.jobs.evaluate.leave_one_group_out`), for metadata.

    The model is fitted as ``ml train`` fits it (its SVMs on the active joblib backend: the Dask
    workers inside ``ml train``), the baseline in this process. ``None`` with fewer than two facilities.
    """
    from ml.jobs.evaluate import Fit, leave_one_group_out
    from ml.model import build_baseline, fit_model

    if frame[schema.DEPARTMENT].nunique() < 2:
        return None
    fits: dict[str, Fit] = {
        "model": partial(fit_model, n_jobs=-1),
        "baseline": lambda train: build_baseline().fit(train[schema.FEATURE_COLUMNS], train[schema.CATEGORY]),
    }
    folds = leave_one_group_out(frame, schema.DEPARTMENT, fits, target)
    return finite(
        {"by": schema.DEPARTMENT, "target_accuracy": target, "folds": folds.drop(columns="fit_s").to_dict("records")}
    )


# -- charts -------------------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _missing(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def chart_coverage(meta: dict[str, Any]) -> bytes:
    fig, ax = _figure()
    decided = meta.get("decisions") or {}
    curve = decided.get("curve") or []
    if not curve:
        _missing(ax, "no coverage curve in this version's metadata (trained before thresholds were chosen)")
        return _png(fig)
    ax.plot([p["coverage"] for p in curve], [p["accuracy"] for p in curve], color="tab:blue", label="accuracy")
    chosen = decided["threshold"]
    ax.axhline(chosen["target_accuracy"], color="grey", linestyle="--", linewidth=1, label="target accuracy")
    if chosen.get("accuracy") is not None:
        ax.scatter([chosen["coverage"]], [chosen["accuracy"]], color="tab:red", zorder=3)
        ax.annotate(
            f"threshold {chosen['threshold']:.3f}\n{chosen['coverage']:.1%} auto-accepted",
            (chosen["coverage"], chosen["accuracy"]),
            textcoords="offset points",
            xytext=(-10, -32),
            ha="right",
        )
    ax.set_xlabel("share of lines auto-accepted (confidence ≥ threshold)")
    ax.set_ylabel("accuracy of auto-accepted lines")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower left")
    ax.set_title(f"out-of-sample: {chosen['rows']} validation lines")
    return _png(fig)


def chart_reliability(meta: dict[str, Any]) -> bytes:
    fig, ax = _figure(5.5, 4.6)
    decided = meta.get("decisions") or {}
    bins = decided.get("reliability") or []
    if not bins:
        _missing(ax, "no reliability bins in this version's metadata")
        return _png(fig)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    widths = [b["high"] - b["low"] for b in bins]
    ax.bar(
        [b["low"] for b in bins], [b["accuracy"] for b in bins], width=widths, align="edge", alpha=0.6, label="accuracy"
    )
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="tab:blue", markersize=3)
    ece = (decided.get("at_threshold") or {}).get("ece")
    ax.set_title(f"expected calibration error {ece:.3f}" if ece is not None else "reliability")
    ax.set_xlabel("confidence")
    ax.set_ylabel("observed accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    return _png(fig)


def chart_categories(meta: dict[str, Any]) -> bytes:
    fig, ax = _figure()
    per_class = (meta.get("metrics") or {}).get("per_class") or {}
    rows = (meta.get("decisions") or {}).get("train_rows_per_category") or {}
    points = [(rows[c], s["f1-score"]) for c, s in per_class.items() if c in rows and "f1-score" in s]
    if not points:
        _missing(ax, "no per-category F1 or training rows in this version's metadata")
        return _png(fig)
    ax.scatter([p[0] for p in points], [p[1] for p in points], alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("training rows of the category (log scale)")
    ax.set_ylabel("F1 on validation lines")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{len(points)} categories scored")
    return _png(fig)


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def chart_confusions(meta: dict[str, Any]) -> bytes:
    pairs = (meta.get("decisions") or {}).get("confused_pairs") or []
    fig, ax = _figure(7.5, 0.9 + 0.35 * max(len(pairs), 3))
    if not pairs:
        _missing(ax, "no confused pairs in this version's metadata")
        return _png(fig)
    labels = [f"{_short(p['true'])} → {_short(p['predicted'])}" for p in reversed(pairs)]
    ax.barh(labels, [p["rows"] for p in reversed(pairs)], color="tab:orange")
    ax.set_xlabel("validation lines (true → predicted)")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def chart_novelty(meta: dict[str, Any]) -> bytes:
    fig, ax = _figure(7.5, 4.2)
    novelty = meta.get("novelty") or {}
    folds = pd.DataFrame(novelty.get("folds") or [])
    if folds.empty:
        _missing(ax, "facility novelty folds not measured for this version (train with --report)")
        return _png(fig)
    wide = folds.pivot_table(index="held_out", columns="recipe", values=["macro_f1", "coverage"], aggfunc="first")
    counts = folds.groupby("held_out")["rows"].first()
    names = [f"{_short(str(h), 20)}\n({counts[h]} novel rows)" for h in wide.index]
    positions = range(len(wide))
    bars = [(score, recipe) for score in ("macro_f1", "coverage") for recipe in ("model", "baseline")]
    width = 0.8 / len(bars)
    for i, (score, recipe) in enumerate(bars):
        if (score, recipe) in wide.columns:
            values = wide[(score, recipe)].fillna(0).to_numpy()
            ax.bar([p + i * width for p in positions], values, width, label=f"{recipe} {score.replace('_', '-')}")
    ax.set_xticks([p + 0.4 - width / 2 for p in positions], names, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"macro-F1; coverage at {novelty.get('target_accuracy', 0.95):.0%} accuracy")
    ax.legend(fontsize=7, ncols=2)
    return _png(fig)


RENDERERS = {
    "coverage": chart_coverage,
    "reliability": chart_reliability,
    "categories": chart_categories,
    "confusions": chart_confusions,
    "novelty": chart_novelty,
}


# -- the page -----------------------------------------------------------------------------------------


def render(meta: dict[str, Any]) -> str:
    """The HTML page of a version's metadata: headline figures and the five charts, one file."""
    name, version = meta.get("name", "model"), meta.get("version", "?")
    metrics = meta.get("metrics") or {}
    at = (meta.get("decisions") or {}).get("at_threshold") or {}

    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    facts = [
        ("estimated accuracy", pct(metrics.get("accuracy"))),
        ("estimated macro-F1", f"{metrics.get('macro_f1', float('nan')):.4f}"),
        ("review threshold", f"{meta.get('review_threshold', 'not chosen')}"),
        ("target accuracy", pct(meta.get("target_accuracy"))),
        ("auto-accepted share", pct(at.get("auto_share"))),
        ("accuracy of auto-accepted", pct(at.get("auto_accuracy"))),
        ("review share", pct(at.get("review_share"))),
        ("top-3 accuracy of reviewed lines", pct(at.get("review_top3_accuracy"))),
        ("expected calibration error", "n/a" if at.get("ece") is None else f"{at['ece']:.4f}"),
        ("training rows", str((meta.get("data") or {}).get("train_rows", "?"))),
        ("snapshot", str((meta.get("data") or {}).get("snapshot") or "-")),
    ]
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    charts = "\n".join(
        f'<section><h2>{html.escape(title)}</h2><img data-chart="{key}" alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode(RENDERERS[key](meta)).decode()}"></section>'
        for key, title in CHARTS
    )
    title = html.escape(f"{name} {version}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}th{{text-align:left;padding-right:2em}}
img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>
<p>Figures measured at training on out-of-sample lines ({html.escape(str(metrics.get("estimate", "")))}).</p>
<table>{table}</table>
{charts}
</body></html>
"""


def write_report(registry: ModelRegistry, version: str, out_dir: str) -> str:
    """Write ``<out_dir>/<name>-<version>.html`` (a directory or any fsspec URL); return its location."""
    meta = registry.metadata(version)
    fs, root = open_store(out_dir)
    fs.makedirs(root, exist_ok=True)
    path = f"{root}/{registry.name}-{meta['version']}.html"
    write_atomically(fs, path, render(meta).encode())
    return path


def write_beside_model(registry: ModelRegistry, version: str) -> str:
    """Write the report into the version's own directory of the store (``ml train --report``)."""
    path = f"{registry.root}/{version}/{REPORT_FILE}"
    write_atomically(registry.fs, path, render(registry.metadata(version)).encode())
    return path


def _run(args: argparse.Namespace) -> int:
    registry = ModelRegistry(args.store, args.model_name)
    print(write_report(registry, registry.resolve(args.version), args.out))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``models report``, added by :mod:`ml.models_cli`."""
    from ml.settings import add_model_name_argument, add_store_argument

    parser = commands.add_parser("report", help="write one self-contained HTML page with a version's charts")
    add_store_argument(parser)
    add_model_name_argument(parser)
    parser.add_argument("version", nargs="?", default="latest", help="version, 'latest' or 'candidate'")
    parser.add_argument("--out", default="var/reports", help="directory to write <name>-<version>.html into")
    parser.set_defaults(func=_run)
