"""``python -m ml train``: validate, estimate quality, fit on every row, gate and register.

Most categories hold a handful of rows, so the registered model must learn from all of them. Quality
is therefore estimated first, the way it has always been measured (:data:`ESTIMATE_METHOD`): the
search and a fit on the rows outside the hash split, scored on the split's unseen descriptions.
Then the final model is fitted on every valid row with the chosen parameters. The estimate goes
into the metadata with how it was made, and the quality gate only compares estimates made the
same way.

The search (grid × cross-validation folds) and the SVMs of both fits (each model and its
calibration folds) run on Dask workers: the client is the CronJob's small pod or a laptop, the
heavy lifting goes where the cores are, and a task lost with a worker is recomputed on another.
Cross-validation folds are grouped by normalised description, like the validation split, so no
score is inflated by the same text on both sides.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import joblib
import pandas as pd
from distributed import Client
from rich.console import Console
from sklearn.model_selection import GridSearchCV, GroupKFold

from ml import decisions, schema
from ml.cli_types import float_between
from ml.cluster import dask_client, package_versions
from ml.errors import BadInputError, GateRejectedError, InfrastructureError
from ml.features import is_validation, normalise_column
from ml.jobs.evaluate import metrics
from ml.model import PARAM_GRID, build_pipeline, fit_model, predict
from ml.reference import PROFILE_KEY, validation_profile
from ml.registry import HASH_SPLIT_ESTIMATE, ModelRegistry
from ml.settings import add_dask_arguments, add_model_name_argument, add_store_argument, image_digest

log = logging.getLogger(__name__)
console = Console(stderr=True)

#: How ``ml train`` estimates quality; recorded in each model's ``metrics["estimate"]``.
ESTIMATE_METHOD = HASH_SPLIT_ESTIMATE


@dataclass
class TrainResult:
    version: str
    promoted: bool
    gate: str
    metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    review_threshold: float | None = None


@contextmanager
def step(title: str) -> Iterator[None]:
    """Show a spinner while a long step runs and its duration when it ends."""
    started = time.perf_counter()
    with console.status(f"{title}…"):
        yield
    console.print(f"[green]✓[/] {title} ({time.perf_counter() - started:.1f}s)")


def search(client: Client, frame: pd.DataFrame, folds: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid search with grouped CV, every (candidate, fold) fit a task on the Dask workers."""
    groups = normalise_column(frame[schema.DESCRIPTION])
    grid = GridSearchCV(
        build_pipeline(calibrated=False),
        PARAM_GRID,
        cv=GroupKFold(n_splits=folds),
        scoring="f1_macro",
        n_jobs=-1,
        refit=False,
        error_score="raise",
    )
    with joblib.parallel_backend("dask", client=client):
        grid.fit(frame[schema.FEATURE_COLUMNS], frame[schema.CATEGORY], groups=groups)
    results = [
        {"params": params, "mean_macro_f1": float(mean), "std_macro_f1": float(std)}
        for params, mean, std in zip(
            grid.cv_results_["params"],
            grid.cv_results_["mean_test_score"],
            grid.cv_results_["std_test_score"],
            strict=True,
        )
    ]
    return dict(grid.best_params_), results


def code_version() -> str:
    return os.environ.get("ML_CODE_VERSION") or importlib_metadata.version("purchase-classifier")


def train(
    raw: pd.DataFrame,
    *,
    store: str,
    name: str,
    source: str,
    snapshot: str | None = None,
    max_bad_share: float = 0.05,
    gate_tolerance: float = 0.01,
    run_search: bool = True,
    folds: int = 3,
    scheduler: str | None = None,
    dask_timeout: float = 30.0,
    candidate: bool = False,
    target_accuracy: float = decisions.DEFAULT_TARGET_ACCURACY,
    html_report: bool = False,
) -> TrainResult:
    """Train on labelled records and register the model; LATEST moves only if the gate passes.

    With ``candidate`` the gated version becomes the registry's CANDIDATE instead, to be tried on
    live traffic (shadow or canary) before ``ml models promote``. The review threshold is chosen on
    the validation rows' predictions so the auto-accepted ones reach ``target_accuracy``
    (:mod:`ml.decisions`); ``html_report`` also measures the facility novelty folds and writes the HTML
    report beside the model (:mod:`ml.report`).
    """
    started = time.perf_counter()
    with step("validating data"):
        frame, report = schema.clean(raw, labeled=True, max_bad_share=max_bad_share)
    console.print(report.summary())
    validation_mask = is_validation(frame[schema.DESCRIPTION])
    estimate_frame, validation = frame[~validation_mask], frame[validation_mask]
    if estimate_frame[schema.CATEGORY].nunique() < 2 or validation.empty:
        raise BadInputError(
            f"not enough data to train: {len(estimate_frame)} rows outside the validation split with "
            f"{estimate_frame[schema.CATEGORY].nunique()} categories, {len(validation)} validation rows"
        )
    console.print(
        f"{len(frame)} rows, {frame[schema.CATEGORY].nunique()} categories; quality estimated on "
        f"{len(validation)} validation rows by a fit on the other {len(estimate_frame)}"
    )
    registry = ModelRegistry(store, name)
    baseline_latest = registry.latest_version()  # fail fast on an unreachable store
    search_results: list[dict[str, Any]] = []
    try:
        with dask_client(scheduler, timeout=dask_timeout) as client:
            params: dict[str, Any] = {}
            if run_search:
                with step(f"searching {_n_candidates()} candidates × {folds} folds on Dask"):
                    params, search_results = search(client, estimate_frame, folds)
                console.print(f"best parameters: {params}")
            with joblib.parallel_backend("dask", client=client):
                with step("estimating quality: a fit without the validation rows, on Dask"):
                    estimator = fit_model(estimate_frame, params, n_jobs=-1)
                    validated = predict(estimator, validation[schema.FEATURE_COLUMNS])
                    scores = metrics(validation[schema.CATEGORY].to_numpy(), validated.category)
                    scores["estimate"] = ESTIMATE_METHOD
                    # The reference the serving drift alerts compare live traffic with: confidences
                    # on descriptions the model has not seen, as live traffic mostly is.
                    profile = validation_profile(validated.confidence)
                    decided = decisions.train_record(
                        validation[schema.CATEGORY].to_numpy(dtype=object),
                        validated,
                        target_accuracy,
                        estimate_frame[schema.CATEGORY].value_counts().to_dict(),
                        source=f"{ESTIMATE_METHOD} validation rows",
                    )
                chosen = decided["threshold"]
                console.print(
                    f"review threshold {chosen['threshold']:.4f}: auto-accepts {chosen['coverage']:.1%} of the "
                    f"validation rows at accuracy {chosen['accuracy'] or 0:.4f} (target {target_accuracy:g})"
                )
                novelty = None
                if html_report:
                    from ml.report import novelty_folds

                    with step("measuring the facility novelty folds (--report), on Dask"):
                        novelty = novelty_folds(frame, target_accuracy)
                console.print(f"estimated accuracy {scores['accuracy']:.4f}  macro-F1 {scores['macro_f1']:.4f}")
                with step(f"fitting the final calibrated model on all {len(frame)} rows on Dask"):
                    pipeline = fit_model(frame, params, n_jobs=-1)
    except (OSError, TimeoutError) as exc:
        raise InfrastructureError(f"Dask failed during training: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("distributed"):  # KilledWorker, CommClosedError, ...
            raise InfrastructureError(f"Dask failed during training: {type(exc).__name__}: {exc}") from exc
        raise

    json_params = {key: _jsonable(value) for key, value in params.items()}
    model_metadata = {
        # the estimate: the search and a fit on the estimate_rows outside the split, scored on validation_rows
        "metrics": scores,
        PROFILE_KEY: profile,
        "review_threshold": chosen["threshold"],
        "target_accuracy": target_accuracy,
        "decisions": decided,
        "novelty": novelty,
        "params": json_params,
        "search": [{**r, "params": {k: _jsonable(v) for k, v in r["params"].items()}} for r in search_results],
        "data": {
            "source": source,
            "snapshot": snapshot,
            "rows": len(raw),
            "bad_rows": report.n_bad,
            "train_rows": len(frame),  # the registered model's fit: every valid row
            "estimate_rows": len(estimate_frame),
            "validation_rows": len(validation),
            "categories": int(frame[schema.CATEGORY].nunique()),
        },
        "libraries": package_versions(),
        "code_version": code_version(),
        "image_digest": image_digest(),
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    with step("storing the model"):
        version = registry.save(pipeline, model_metadata)
    if html_report:
        from ml.report import write_beside_model

        console.print(f"report: {write_beside_model(registry, version)}")
    decision = registry.gate(scores, gate_tolerance)
    if not decision.promoted:
        raise GateRejectedError(
            f"model {name}/{version} stored but not promoted: {decision.reason}; LATEST stays {baseline_latest}"
        )
    if candidate:
        registry.propose(version)
        console.print(f"[green]CANDIDATE[/] -> {version} ({decision.reason}); LATEST stays {baseline_latest}")
        return TrainResult(version, False, decision.reason, scores, json_params, chosen["threshold"])
    registry.promote(version)
    console.print(f"[green]LATEST[/] -> {version} ({decision.reason})")
    return TrainResult(version, decision.promoted, decision.reason, scores, json_params, chosen["threshold"])


def _n_candidates() -> int:
    count = 1
    for values in PARAM_GRID.values():
        count *= len(values)
    return count


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def run(args: argparse.Namespace) -> int:
    if args.snapshot:
        from ml.snapshots import load_snapshot

        raw, manifest = load_snapshot(args.store, args.snapshot)
        source, snapshot = f"{args.store} snapshot", str(manifest.get("snapshot_id", args.snapshot))
    else:
        raw, source, snapshot = schema.read_records(args.data, encoding=args.encoding), args.data, None
    result = train(
        raw,
        store=args.store,
        name=args.model_name,
        source=source,
        snapshot=snapshot,
        max_bad_share=args.max_bad_share,
        gate_tolerance=args.gate_tolerance,
        run_search=args.search,
        folds=args.folds,
        scheduler=args.scheduler,
        dask_timeout=args.dask_timeout,
        candidate=args.candidate,
        target_accuracy=args.target_accuracy,
        html_report=args.report,
    )
    print(
        json.dumps(
            {
                "version": result.version,
                "promoted": result.promoted,
                "candidate": args.candidate,
                "gate": result.gate,
                "accuracy": result.metrics["accuracy"],
                "macro_f1": result.metrics["macro_f1"],
                "review_threshold": result.review_threshold,
            }
        )
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train, gate and register a model")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="labelled CSV or parquet: a path or any fsspec URL")
    data.add_argument("--snapshot", help="a training snapshot id in the store, or 'latest'")
    schema.add_encoding_argument(parser)
    add_store_argument(parser)
    add_model_name_argument(parser)
    parser.add_argument("--max-bad-share", type=float, default=0.05, help="refuse data above this bad-row share")
    parser.add_argument(
        "--gate-tolerance", type=float, default=0.01, help="allowed macro-F1 drop against the current LATEST"
    )
    parser.add_argument("--no-search", dest="search", action="store_false", help="skip the hyper-parameter search")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds of the search")
    parser.add_argument(
        "--candidate", action="store_true", help="make the gated version the CANDIDATE instead of LATEST"
    )
    parser.add_argument(
        "--target-accuracy",
        type=float_between(0.0, 1.0),
        default=decisions.DEFAULT_TARGET_ACCURACY,
        help="accuracy the auto-accepted lines should reach; sets the model's review threshold "
        f"(default {decisions.DEFAULT_TARGET_ACCURACY})",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also measure the facility novelty folds and write report.html beside the model",
    )
    add_dask_arguments(parser)
    parser.set_defaults(func=run)
