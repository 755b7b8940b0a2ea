"""What a purchasing team decides with the model's confidence: which lines to accept unseen, how
right they are, and how well the reviewed rest is served by the top three suggestions.

Every figure here is computed from out-of-sample predictions (``ml train`` uses its hash split:
descriptions the estimating fit never saw), because a model's confidence on its own training rows
says nothing about the lines it will meet. A line is *auto-accepted* when its confidence is at least
the model's ``review_threshold``, and flagged for review below it
(:meth:`ml.model.Predictions.needs_review`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: The accuracy auto-accepted lines should reach unless ``ml train --target-accuracy`` says otherwise.
DEFAULT_TARGET_ACCURACY = 0.95
#: The review threshold of a model stored before thresholds were chosen at training (the service's
#: default too), when nothing else is given.
DEFAULT_REVIEW_THRESHOLD = 0.5
#: Equal-width confidence bins of the reliability diagram and the expected calibration error (the
#: usual 15 of Guo et al. 2017, "On Calibration of Modern Neural Networks").
RELIABILITY_BINS = 15
#: One-sided normal quantile of the lower confidence bound the chosen threshold's accuracy must
#: keep above the target (95 %). Taking the cut where the observed accuracy just touches the target
#: picks, among many cuts, one that was lucky on these lines: on 474 chosen-on lines of the test
#: sample that cut promised 0.90 and gave 0.863 on novel descriptions. The Wilson bound costs little
#: coverage on the thousands of validation lines of real data and guards the small ones.
CONFIDENCE_Z = 1.645
#: Points of the coverage–accuracy curve kept in metadata and ``ml evaluate --json`` (one per 1 %).
CURVE_POINTS = 100
#: Most-confused (true, predicted) pairs kept for the report.
CONFUSED_PAIRS = 12


@dataclass(frozen=True)
class Threshold:
    """A confidence threshold and what it does on the lines it was chosen on."""

    threshold: float
    coverage: float  # share of lines auto-accepted (confidence >= threshold)
    accuracy: float  # accuracy of those lines (NaN when there are none)
    rows: int  # lines it was chosen on


def _sorted(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    return np.asarray(confidence, dtype=float)[order], np.asarray(correct, dtype=bool)[order]


def coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (distinct confidences, high to low) with the coverage and accuracy of the lines at or above each.

    Lines with equal confidence are accepted or flagged together, so only the last line of each run
    of ties is a possible cut.
    """
    conf, hits = _sorted(confidence, correct)
    if not len(conf):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    accepted = np.arange(1, len(conf) + 1)
    accuracy = np.cumsum(hits) / accepted
    cuts = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))
    return conf[cuts], accepted[cuts] / len(conf), accuracy[cuts]


def wilson_lower_bound(accuracy: np.ndarray, rows: np.ndarray, z: float = CONFIDENCE_Z) -> np.ndarray:
    """Lower end of the Wilson score interval of an accuracy measured on ``rows`` lines."""
    n = np.maximum(np.asarray(rows, dtype=float), 1.0)
    p = np.asarray(accuracy, dtype=float)
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.asarray((centre - spread) / (1 + z * z / n))


def threshold_for_accuracy(
    confidence: np.ndarray, correct: np.ndarray, target: float, z: float = CONFIDENCE_Z
) -> Threshold:
    """The lowest threshold whose auto-accepted lines reach ``target`` accuracy: the most coverage at it.

    "Reach" means the lower confidence bound (:func:`wilson_lower_bound`, ``z``) of their accuracy
    is at least ``target``, so the promise holds beyond the lines it was chosen on; ``z=0`` takes
    the observed accuracy as it is.

    When no threshold reaches the target, the threshold lies just above the highest confidence:
    every line goes to review, which is the honest answer.
    """
    thresholds, coverage, accuracy = coverage_curve(confidence, correct)
    reaching = np.flatnonzero(wilson_lower_bound(accuracy, coverage * len(confidence), z) >= target)
    if not len(reaching):
        top = float(thresholds[0]) if len(thresholds) else 0.0
        return Threshold(min(1.0, float(np.nextafter(top, np.inf))), 0.0, float("nan"), len(confidence))
    best = reaching[-1]
    return Threshold(float(thresholds[best]), float(coverage[best]), float(accuracy[best]), len(confidence))


def at_threshold(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> Threshold:
    """Coverage and accuracy of the lines a given threshold auto-accepts."""
    accepted = np.asarray(confidence, dtype=float) >= threshold
    hits = np.asarray(correct, dtype=bool)
    accuracy = float(hits[accepted].mean()) if accepted.any() else float("nan")
    return Threshold(float(threshold), float(accepted.mean()) if len(hits) else 0.0, accuracy, len(hits))


def curve_points(confidence: np.ndarray, correct: np.ndarray, points: int = CURVE_POINTS) -> list[dict[str, float]]:
    """The coverage–accuracy curve at about ``points`` evenly spaced coverages (for JSON and charts)."""
    thresholds, coverage, accuracy = coverage_curve(confidence, correct)
    if not len(thresholds):
        return []
    picks = np.unique(np.searchsorted(coverage, np.linspace(0, 1, points + 1)[1:] - 1e-12).clip(0, len(coverage) - 1))
    return [
        {
            "threshold": round(float(thresholds[i]), 6),
            "coverage": round(float(coverage[i]), 6),
            "accuracy": round(float(accuracy[i]), 6),
        }
        for i in picks
    ]


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its bounds, line count, mean confidence and accuracy (empty bins left out)."""
    conf = np.asarray(confidence, dtype=float)
    hits = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        if members.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "rows": int(members.sum()),
                    "confidence": float(conf[members].mean()),
                    "accuracy": float(hits[members].mean()),
                }
            )
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS) -> float:
    """Row-weighted mean gap between confidence and accuracy over the reliability bins."""
    table = reliability(confidence, correct, bins)
    total = sum(b["rows"] for b in table)
    if not total:
        return float("nan")
    return float(sum(b["rows"] * abs(b["accuracy"] - b["confidence"]) for b in table) / total)


def top_k_hits(top_categories: np.ndarray, truth: np.ndarray, k: int = 3) -> np.ndarray:
    """Whether each line's true category is among its ``k`` best suggestions."""
    top = np.asarray(top_categories, dtype=object)[:, :k]
    return (top == np.asarray(truth, dtype=object)[:, None]).any(axis=1)


def confused_pairs(truth: np.ndarray, predicted: np.ndarray, n: int = CONFUSED_PAIRS) -> list[dict[str, Any]]:
    """The ``n`` most frequent (true, predicted) mistakes, with counts."""
    mistakes = Counter(
        (str(t), str(p))
        for t, p in zip(np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object), strict=True)
        if t != p
    )
    return [{"true": t, "predicted": p, "rows": count} for (t, p), count in mistakes.most_common(n)]


def summary(
    truth: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    top_categories: np.ndarray,
    threshold: float,
    target: float = DEFAULT_TARGET_ACCURACY,
) -> dict[str, Any]:
    """What ``threshold`` does on labelled lines: the figures ``ml evaluate`` prints and train stores.

    ``review_top3_accuracy`` is the share of flagged lines whose category is among the three
    suggestions an expert sees; ``coverage_at_target`` the most lines any threshold could accept at
    ``target`` accuracy on these same lines (what the chosen threshold would ideally reach).
    """
    correct = np.asarray(truth, dtype=object) == np.asarray(predicted, dtype=object)
    accepted = at_threshold(confidence, correct, threshold)
    review = np.asarray(confidence, dtype=float) < threshold
    top3 = top_k_hits(top_categories, truth, 3)
    best = threshold_for_accuracy(confidence, correct, target)
    return {
        "threshold": float(threshold),
        "rows": len(correct),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "top3_accuracy": float(top3.mean()) if len(top3) else float("nan"),
        "auto_share": accepted.coverage,
        "auto_accuracy": accepted.accuracy,
        "review_share": float(review.mean()) if len(review) else 0.0,
        "review_top3_accuracy": float(top3[review].mean()) if review.any() else float("nan"),
        "ece": expected_calibration_error(confidence, correct),
        "target_accuracy": float(target),
        "coverage_at_target": best.coverage,
        "threshold_at_target": best.threshold,
    }


def line_confidence(model: Any, features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Predicted categories and a confidence for ranking lines, for any fitted classifier pipeline.

    A calibrated model gives its top probability; a plain SVM (the baseline) its top decision score,
    which ranks lines just as well for coverage at a target accuracy, though it is no probability.
    """
    if hasattr(model, "predict_proba"):
        try:
            probabilities = model.predict_proba(features)
        except AttributeError:  # a pipeline whose last step has no predict_proba
            probabilities = None
        if probabilities is not None:
            classes = model.classes_
            return classes[np.argmax(probabilities, axis=1)], probabilities.max(axis=1)
    scores = model.decision_function(features)
    if scores.ndim == 1:  # two classes: one score for classes_[1]
        scores = np.column_stack([-scores, scores])
    return model.classes_[np.argmax(scores, axis=1)], scores.max(axis=1)


def coverage_at(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The largest share of lines some threshold auto-accepts at ``target`` accuracy."""
    return threshold_for_accuracy(confidence, correct, target).coverage


def threshold_record(choice: Threshold, target: float, source: str) -> dict[str, Any]:
    """How a model's ``review_threshold`` was chosen, as stored in its metadata."""
    return {**asdict(choice), "target_accuracy": float(target), "source": source}


def train_record(
    truth: np.ndarray,
    predictions: Any,
    target: float,
    train_categories: dict[Any, int],
    source: str,
) -> dict[str, Any]:
    """What ``ml train`` stores about decisions, from out-of-sample :class:`ml.model.Predictions`.

    The threshold is chosen on these lines; the curve, reliability bins and confused pairs are kept
    so ``ml models report`` can draw them later without the data.
    """
    truth = np.asarray(truth, dtype=object)
    correct = truth == np.asarray(predictions.category, dtype=object)
    choice = threshold_for_accuracy(predictions.confidence, correct, target)
    return finite(
        {
            "threshold": threshold_record(choice, target, source),
            "at_threshold": summary(
                truth,
                predictions.category,
                predictions.confidence,
                predictions.top_categories,
                choice.threshold,
                target,
            ),
            "curve": curve_points(predictions.confidence, correct),
            "reliability": reliability(predictions.confidence, correct),
            "confused_pairs": confused_pairs(truth, predictions.category),
            "train_rows_per_category": {str(k): int(v) for k, v in train_categories.items()},
        }
    )


def finite(value: Any) -> Any:
    """``value`` with every NaN float replaced by ``None``: JSON has no NaN, and no line means no figure."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def review_threshold(
    metadata: dict[str, Any], override: float | None, fallback: float = DEFAULT_REVIEW_THRESHOLD
) -> tuple[float, str]:
    """The threshold a job or the service uses and where it came from, for it to say so.

    An explicit ``override`` (a flag or setting) wins; then the model's own, chosen at training
    for its target accuracy; a model trained before thresholds were chosen (or whose metadata holds
    something that is not a share) gets ``fallback``.
    """
    if override is not None:
        return float(override), "set explicitly"
    chosen = metadata.get("review_threshold")
    if isinstance(chosen, int | float) and not isinstance(chosen, bool) and 0 <= chosen <= 1:
        target = metadata.get("target_accuracy")
        why = f" for target accuracy {target:g}" if isinstance(target, int | float) else ""
        return float(chosen), f"the model's metadata{why}"
    why = "has none" if chosen is None else f"holds {chosen!r}, not a share"
    return float(fallback), f"the default (the model's metadata {why})"


def evaluation(truth: np.ndarray, predictions: Any, threshold: float, source: str) -> dict[str, Any]:
    """``ml evaluate``'s decision figures at the model's threshold, with the curve and reliability bins."""
    truth = np.asarray(truth, dtype=object)
    correct = truth == np.asarray(predictions.category, dtype=object)
    return finite(
        {
            "at_threshold": {
                **summary(truth, predictions.category, predictions.confidence, predictions.top_categories, threshold),
                "threshold_source": source,
            },
            "curve": curve_points(predictions.confidence, correct),
            "reliability": reliability(predictions.confidence, correct),
        }
    )


def describe(figures: dict[str, Any]) -> list[str]:
    """:func:`summary`'s figures as lines for a terminal."""

    def share(value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{value:.1%}"

    return [
        f"review threshold {figures['threshold']:.4f} ({figures.get('threshold_source', 'given')})",
        f"auto-accepted {share(figures['auto_share'])} of {figures['rows']} lines at accuracy "
        f"{share(figures['auto_accuracy'])}; review {share(figures['review_share'])}, whose right category is "
        f"in the top 3 for {share(figures['review_top3_accuracy'])}",
        f"top-1 accuracy {share(figures['accuracy'])}, top-3 {share(figures['top3_accuracy'])}; expected "
        f"calibration error {figures['ece']:.4f}"
        if figures["ece"] is not None
        else "no lines",
        f"at most {share(figures['coverage_at_target'])} could be auto-accepted at "
        f"{figures['target_accuracy']:.0%} accuracy on these lines (threshold {figures['threshold_at_target']:.4f})",
    ]
