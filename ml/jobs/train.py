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
import hashlib
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
import numpy as np
import pandas as pd
from distributed import Client, as_completed
from rich.console import Console
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, ParameterGrid

from ml import decisions, schema
from ml.cli_types import float_between, int_at_least, positive_float, share
from ml.cluster import dask_client, package_versions
from ml.errors import BadInputError, GateRejectedError, InfrastructureError
from ml.features import is_validation, normalise_column
from ml.jobs.evaluate import metrics
from ml.model import DEFAULT_PARAMS, PARAM_GRID, build_pipeline, fit_model, predict
from ml.reference import PROFILE_KEY, validation_profile
from ml.registry import HASH_SPLIT_ESTIMATE, GateDecision, ModelRegistry
from ml.settings import add_dask_arguments, add_model_name_argument, add_store_argument, image_digest

log = logging.getLogger(__name__)
#: soft_wrap: a line stays one line in a CronJob's log instead of being cut at 80 columns
console = Console(stderr=True, soft_wrap=True)

#: Seconds the hyper-parameter search (``--search``) may take by default. The whole grid measured
#: 4-5 minutes of wall time on the shipped data on an idle 2-core machine; the budget lets that
#: finish there and bounds it on a busy or smaller one.
DEFAULT_SEARCH_BUDGET = 600.0

#: How ``ml train`` estimates quality; recorded in each model's ``metrics["estimate"]``.
ESTIMATE_METHOD = HASH_SPLIT_ESTIMATE
#: ``metrics[ROWS_KEY]``: the fingerprint of the validation rows the estimate was scored on.
ROWS_KEY = "validation_rows_sha256"


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
    if not console.is_terminal:  # a log (CronJob, CI, a pipe) gets no spinner: say what starts
        console.print(f"{title}…")
    with console.status(f"{title}…"):
        yield
    console.print(f"[green]✓[/] {title} ({time.perf_counter() - started:.1f}s)")


def fold_score(params: dict[str, Any], features: pd.DataFrame, labels: pd.Series, train: Any, test: Any) -> float:
    """Macro-F1 of the plain SVM with ``params`` fitted on the ``train`` rows, on the ``test`` rows (a task)."""
    model = build_pipeline(params, calibrated=False).fit(features.iloc[train], labels.iloc[train])
    return float(f1_score(labels.iloc[test], model.predict(features.iloc[test]), average="macro", zero_division=0))


def search(
    client: Client, frame: pd.DataFrame, folds: int, budget: float | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid search with grouped CV: every (candidate, fold) fit is a task on the Dask workers.

    All tasks are submitted at once (the cluster stays busy) and reported as they finish. When the
    ``budget`` (seconds) runs out, the unfinished tasks are cancelled and the best candidate among
    those with every fold scored wins; a search that completed no candidate is an error.
    """
    features, labels = frame[schema.FEATURE_COLUMNS], frame[schema.CATEGORY]
    splits = list(GroupKFold(n_splits=folds).split(features, labels, normalise_column(frame[schema.DESCRIPTION])))
    candidates = list(ParameterGrid(PARAM_GRID))
    features_future, labels_future = client.scatter([features, labels], broadcast=True)
    futures = {
        client.submit(fold_score, params, features_future, labels_future, train, test, pure=False): number
        for number, params in enumerate(candidates)
        for train, test in splits
    }
    scores: dict[int, list[float]] = {number: [] for number in range(len(candidates))}
    started = time.perf_counter()
    try:
        for done, future in enumerate(as_completed(futures, timeout=budget), start=1):
            number = futures[future]
            scores[number].append(future.result())
            if len(scores[number]) == folds:
                console.print(
                    f"  candidate {number + 1}/{len(candidates)} {_short(candidates[number])}: macro-F1 "
                    f"{np.mean(scores[number]):.4f} ({done}/{len(futures)} fits, {time.perf_counter() - started:.0f}s)"
                )
    except TimeoutError:
        client.cancel(list(futures))
        console.print(f"  search budget of {budget:.0f}s spent: unfinished candidates left out")
    results = [
        {"params": candidates[number], "mean_macro_f1": float(np.mean(got)), "std_macro_f1": float(np.std(got))}
        for number, got in scores.items()
        if len(got) == folds
    ]
    if not results:
        raise BadInputError(
            f"the search's budget of {budget:.0f}s ended before any candidate's {folds} folds were scored: "
            "raise --search-budget, or train without --search"
        )
    best = max(results, key=lambda result: result["mean_macro_f1"])
    return dict(best["params"]), results


def _short(params: dict[str, Any]) -> str:
    """``{'classifier__C': 1.0}`` as ``C=1.0``: the last part of each parameter name."""
    return ", ".join(f"{name.rsplit('__', 1)[-1]}={value}" for name, value in params.items())


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
    run_search: bool = False,
    search_budget: float | None = DEFAULT_SEARCH_BUDGET,
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
                console.print(
                    f"searching {_n_candidates()} candidates × {folds} folds on Dask "
                    f"(budget {search_budget or float('inf'):.0f}s)"
                )
                with step("search"):
                    params, search_results = search(client, estimate_frame, folds, search_budget)
                console.print(f"best parameters: {params}")
            with joblib.parallel_backend("dask", client=client):
                with step("estimating quality: a fit without the validation rows, on Dask"):
                    estimator = fit_model(estimate_frame, params, n_jobs=-1)
                    validated = predict(estimator, validation[schema.FEATURE_COLUMNS])
                    scores = metrics(validation[schema.CATEGORY].to_numpy(), validated.category)
                    scores["estimate"] = ESTIMATE_METHOD
                    scores[ROWS_KEY] = rows_fingerprint(validation)
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
                rescored = latest_on_these_rows(registry, scores, params, estimate_frame, validation)
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
    decision = gate(registry, scores, gate_tolerance, rescored)
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


def rows_fingerprint(rows: pd.DataFrame) -> str:
    """sha256 of a set of labelled rows, whatever their order or ids: which rows an estimate was made on."""
    hashes = np.sort(pd.util.hash_pandas_object(rows[[*schema.FEATURE_COLUMNS, schema.CATEGORY]], index=False))
    return hashlib.sha256(hashes.tobytes()).hexdigest()


def latest_on_these_rows(
    registry: ModelRegistry,
    scores: dict[str, Any],
    params: dict[str, Any],
    estimate_frame: pd.DataFrame,
    validation: pd.DataFrame,
) -> dict[str, Any] | None:
    """LATEST's estimate remade on this run's rows, when its recorded one was made on other rows.

    Two estimates compare only when made the same way *on the same rows*: a snapshot with its
    duplicates merged and the raw file it came from give different figures for the same model.
    LATEST's parameters are fitted on this run's estimate rows and scored on its validation rows,
    exactly as the new model was (identical parameters make an identical estimate, so no fit).
    None when the recorded estimate compares as it is, or cannot (no LATEST, another method:
    :meth:`ModelRegistry.gate` decides those).
    """
    current = registry.latest_version()
    if current is None:
        return None
    recorded = registry.metadata(current)
    method = recorded["metrics"].get("estimate", HASH_SPLIT_ESTIMATE)
    if method != scores["estimate"] or recorded["metrics"].get(ROWS_KEY) == scores[ROWS_KEY]:
        return None
    latest_params = {key: tuple(v) if isinstance(v, list) else v for key, v in recorded.get("params", {}).items()}
    if {**DEFAULT_PARAMS, **latest_params} == {**DEFAULT_PARAMS, **params}:
        macro_f1 = float(scores["macro_f1"])
    else:
        with step(f"re-estimating LATEST {current}'s parameters on the same {len(validation)} validation rows"):
            estimator = fit_model(estimate_frame, latest_params, n_jobs=-1)
            validated = predict(estimator, validation[schema.FEATURE_COLUMNS])
            macro_f1 = float(metrics(validation[schema.CATEGORY].to_numpy(), validated.category)["macro_f1"])
    return {"version": current, "macro_f1": macro_f1, "recorded_macro_f1": float(recorded["metrics"]["macro_f1"])}


def gate(
    registry: ModelRegistry, scores: dict[str, Any], tolerance: float, rescored: dict[str, Any] | None
) -> GateDecision:
    """The quality gate on estimates made on the same rows (see :func:`latest_on_these_rows`)."""
    if rescored is None:
        return registry.gate(scores, tolerance)
    new_f1, old_f1 = float(scores["macro_f1"]), rescored["macro_f1"]
    return GateDecision(
        new_f1 >= old_f1 - tolerance,
        f"macro-F1 {new_f1:.4f} vs {old_f1:.4f} of LATEST {rescored['version']}'s parameters on the same "
        f"{scores['n_rows']} validation rows (its recorded {rescored['recorded_macro_f1']:.4f} was estimated "
        f"on other rows; tolerance {tolerance})",
    )


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
        search_budget=args.search_budget,
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
    parser.add_argument("--max-bad-share", type=share, default=0.05, help="refuse data above this bad-row share")
    parser.add_argument(
        "--gate-tolerance", type=share, default=0.01, help="allowed macro-F1 drop against the current LATEST"
    )
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the hyper-parameter search (ml.model.PARAM_GRID) before the fits; off by default: "
        "known-good parameters (ml.model.DEFAULT_PARAMS)",
    )
    parser.add_argument(
        "--search-budget",
        type=positive_float,
        default=DEFAULT_SEARCH_BUDGET,
        help=f"seconds the search may take; unfinished candidates are left out (default {DEFAULT_SEARCH_BUDGET:.0f})",
    )
    parser.add_argument(
        "--folds", type=int_at_least(2), default=3, help="cross-validation folds of the search (default 3)"
    )
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
