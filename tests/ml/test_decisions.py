"""Threshold choice, coverage curve, calibration error and top-k: on hand-checkable lines, then on a real model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml import decisions, schema
from ml.features import is_validation
from ml.model import fit_model, predict


def test_threshold_is_the_lowest_cut_reaching_the_target() -> None:
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    # accuracy at or above each cut: 1, 1, 1, 1, .8, .833, .714, .625
    choice = decisions.threshold_for_accuracy(confidence, correct, 0.8, z=0)
    assert choice.threshold == 0.6 and choice.coverage == pytest.approx(6 / 8)
    assert choice.accuracy == pytest.approx(5 / 6)
    assert decisions.threshold_for_accuracy(confidence, correct, 0.95, z=0).threshold == 0.8
    # the threshold does on these lines what it promised
    again = decisions.at_threshold(confidence, correct, choice.threshold)
    assert (again.coverage, again.accuracy) == (choice.coverage, choice.accuracy)


def test_tied_confidences_are_accepted_or_flagged_together() -> None:
    confidence = np.array([0.9, 0.7, 0.7, 0.7])
    correct = np.array([1, 1, 0, 0], dtype=bool)
    thresholds, coverage, accuracy = decisions.coverage_curve(confidence, correct)
    assert thresholds.tolist() == [0.9, 0.7] and coverage.tolist() == [0.25, 1.0] and accuracy.tolist() == [1.0, 0.5]
    assert decisions.threshold_for_accuracy(confidence, correct, 0.6, z=0).threshold == 0.9


def test_the_chosen_accuracy_must_hold_beyond_the_lines_it_was_chosen_on() -> None:
    """4 of 4 right is 100 %, but proves little: the lower bound keeps a 95 % promise from resting on it."""
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 1, 0], dtype=bool)
    assert decisions.threshold_for_accuracy(confidence, correct, 0.95, z=0).coverage == 0.8
    assert decisions.threshold_for_accuracy(confidence, correct, 0.95).coverage == 0.0
    many = np.repeat(confidence, 200)  # the same shares on 1,000 lines do prove 95 %... at 80 % coverage
    assert decisions.threshold_for_accuracy(many, np.repeat(correct, 200), 0.95).coverage == 0.8
    assert decisions.wilson_lower_bound(np.array([0.9]), np.array([10_000]))[0] == pytest.approx(0.895, abs=0.001)


def test_unreachable_target_sends_every_line_to_review() -> None:
    confidence = np.array([0.9, 0.8])
    choice = decisions.threshold_for_accuracy(confidence, np.array([False, True]), 0.95)
    assert choice.coverage == 0.0 and choice.threshold > 0.9
    assert not (confidence >= choice.threshold).any()


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    # 10 lines at 0.8 confidence, 8 right: perfectly calibrated; the same lines at 0.99 are not
    correct = np.array([1] * 8 + [0] * 2, dtype=bool)
    assert decisions.expected_calibration_error(np.full(10, 0.8), correct) == pytest.approx(0.0)
    assert decisions.expected_calibration_error(np.full(10, 0.99), correct) == pytest.approx(0.19)
    bins = decisions.reliability(np.full(10, 0.8), correct)
    assert len(bins) == 1 and bins[0]["rows"] == 10 and bins[0]["accuracy"] == pytest.approx(0.8)


def test_summary_splits_lines_into_accepted_and_reviewed() -> None:
    truth = np.array(["a", "b", "c", "a"], dtype=object)
    top = np.array([["a", "b", "c"], ["a", "b", "c"], ["a", "b", "d"], ["b", "c", "d"]], dtype=object)
    confidence = np.array([0.9, 0.4, 0.3, 0.95])
    figures = decisions.summary(truth, top[:, 0], confidence, top, threshold=0.5)
    assert figures["auto_share"] == 0.5 and figures["auto_accuracy"] == 0.5  # "a" right, "b" wrong
    assert figures["review_share"] == 0.5 and figures["review_top3_accuracy"] == 0.5  # "b" in top 3, "c" not
    assert figures["top3_accuracy"] == 0.5 and figures["accuracy"] == 0.25


def test_review_threshold_says_where_it_came_from() -> None:
    assert decisions.review_threshold({"review_threshold": 0.7, "target_accuracy": 0.95}, None, 0.5) == (
        0.7,
        "the model's metadata for target accuracy 0.95",
    )
    assert decisions.review_threshold({"review_threshold": 0.7}, 0.3, 0.5) == (0.3, "set explicitly")
    assert decisions.review_threshold({}, None, 0.5)[1].startswith("the default")


@pytest.mark.parametrize("stored", [5, -1, 1.0001, "x", "0.7", float("nan"), float("inf"), True, None])
def test_a_stored_threshold_that_is_not_a_share_falls_back_to_the_default(stored: object) -> None:
    """Metadata comes from the store, outside the process: a stored 5 would flag every line, -1 none,
    and "x" could not be compared with a confidence at all."""
    threshold, source = decisions.review_threshold({"review_threshold": stored, "target_accuracy": 0.95}, None)
    assert threshold == decisions.DEFAULT_REVIEW_THRESHOLD
    assert source.startswith("the default") and ("has none" if stored is None else repr(stored)) in source
    assert decisions.review_threshold({"review_threshold": stored}, None, 0.25) == (0.25, source)


@pytest.mark.slow
def test_a_threshold_chosen_on_the_split_holds_on_novel_descriptions(purchases_sample: pd.DataFrame) -> None:
    """Chosen on one set of unseen descriptions, the threshold keeps its promise on another.

    The sample's rows are split three ways by description: a fit, a set to choose the threshold
    on (as ``ml train`` does on its hash split) and a set of descriptions neither has seen.
    """
    frame = schema.coerce(purchases_sample, labeled=True)
    held = is_validation(frame[schema.DESCRIPTION])
    rest = frame[~held]
    half = is_validation(rest[schema.DESCRIPTION] + " second split")
    model = fit_model(rest[~half])
    choose, novel = rest[half], frame[held]

    def scored(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        result = predict(model, rows[schema.FEATURE_COLUMNS])
        return result.confidence, result.category == rows[schema.CATEGORY].to_numpy(dtype=object)

    choice = decisions.threshold_for_accuracy(*scored(choose), 0.9)
    held_out = decisions.at_threshold(*scored(novel), choice.threshold)
    assert choice.coverage > 0.3
    assert held_out.accuracy >= 0.9 - 0.03, (choice, held_out)  # within sampling noise of the target
    assert abs(held_out.coverage - choice.coverage) < 0.1
    assert decisions.expected_calibration_error(*scored(novel)) < 0.08
