from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.svm import LinearSVC

from ml import schema
from ml.calibration import PROTOTYPE_WEIGHT, TemperatureScaledSVC, fit_temperature
from ml.features import build_preprocessor, category_prototypes
from ml.model import fit_model, predict


def test_predictions_carry_confidence_and_sorted_top_k(trained_model, purchases_sample: pd.DataFrame) -> None:
    frame = schema.coerce(purchases_sample.head(50), labeled=True)
    result = predict(trained_model.pipeline, frame, top_k=3)
    assert result.top_categories.shape == (50, 3)
    assert np.all(np.diff(result.top_probabilities, axis=1) <= 0)
    assert np.array_equal(result.category, result.top_categories[:, 0])
    assert np.array_equal(result.category, trained_model.pipeline.predict(frame[schema.FEATURE_COLUMNS]))
    probabilities = trained_model.pipeline.predict_proba(frame[schema.FEATURE_COLUMNS])
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(result.confidence, probabilities.max(axis=1), rtol=1e-5)
    assert result.needs_review(1.01).all() and not result.needs_review(0.0).any()


def test_confidence_tracks_accuracy_on_unseen_text(trained_model, full_data: pd.DataFrame, purchases_sample) -> None:
    """Calibration: among confident predictions the hit rate is high, among unsure ones low."""
    unseen = full_data[
        full_data.category.isin(purchases_sample.category.unique()) & ~full_data.id.isin(purchases_sample.id)
    ].sample(1500, random_state=3)
    frame = schema.coerce(unseen, labeled=True)
    result = predict(trained_model.pipeline, frame)
    hit = result.category == frame["category"].to_numpy()
    sure, unsure = result.confidence >= 0.8, result.confidence < 0.4
    assert hit[sure].mean() > 0.85
    assert hit[unsure].mean() < 0.6
    # calibrated: mean confidence within a few points of accuracy overall
    assert abs(result.confidence.mean() - hit.mean()) < 0.1


def test_single_example_categories_train_without_error(purchases_sample: pd.DataFrame) -> None:
    frame = schema.coerce(purchases_sample.head(300), labeled=True)
    frame.loc[0, "category"] = "ONLY ONE ROW"
    pipeline = fit_model(frame)
    assert "ONLY ONE ROW" in pipeline.classes_
    assert np.isfinite(pipeline.named_steps["classifier"].temperature_)


def test_temperature_sharpens_underconfident_scores() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    scores = rng.normal(0, 0.1, (500, 3))
    scores[np.arange(500), labels] += 0.3  # always right, but with small margins
    assert fit_temperature(scores, labels) < 0.2


def test_calibration_sample_keeps_descriptions_whole_and_under_the_cap() -> None:
    """Duplicates of one description must never straddle calibration folds, so groups stay whole."""
    groups = np.array([f"TEXT {i % 700}" for i in range(3000)], dtype=object)  # 700 texts, 4-5 rows each
    rows = TemperatureScaledSVC(calibration_rows=1000)._calibration_rows(groups)
    assert 990 < len(rows) <= 1000
    chosen = set(groups[rows])
    assert len(rows) == np.isin(groups, list(chosen)).sum()  # every row of a chosen text, none of the others
    assert len(TemperatureScaledSVC(calibration_rows=5000)._calibration_rows(groups)) == 3000


def test_category_blocks_train_the_same_one_vs_rest_problems(purchases_sample: pd.DataFrame) -> None:
    """Splitting the categories into parallel blocks must not change the model."""
    frame = schema.coerce(purchases_sample, labeled=True)
    X = build_preprocessor(min_df=2).fit_transform(frame)
    y = frame["category"].to_numpy()
    blocked = TemperatureScaledSVC(tol=1e-4, blocks=3).fit(X, y)
    plain = LinearSVC(C=0.5, tol=1e-4).fit(X, y)
    assert np.allclose(blocked.decision_function(X), plain.decision_function(X), atol=1e-3)
    assert (blocked.predict(X) == plain.predict(X)).all()


def test_repeated_rows_are_fitted_once_with_their_count_as_weight(purchases_sample: pd.DataFrame) -> None:
    """Fitting distinct rows weighted by their count must give the SVM fitted on every repeat."""
    frame = schema.coerce(purchases_sample.head(400), labeled=True)
    X = build_preprocessor(min_df=2).fit_transform(frame)
    y = frame["category"].to_numpy()
    repeats = np.r_[np.arange(len(y)), np.arange(100), np.arange(50)]  # 100 rows twice, 50 three times
    weighted = TemperatureScaledSVC(tol=1e-4).fit(X[repeats], y[repeats])
    plain = LinearSVC(C=0.5, tol=1e-4).fit(X[repeats], y[repeats])
    assert np.allclose(weighted.decision_function(X), plain.decision_function(X), atol=1e-3)
    # a single count of each row is another problem: the weights are what makes the two equal
    once = TemperatureScaledSVC(tol=1e-4).fit(X, y)
    assert not np.allclose(once.decision_function(X), plain.decision_function(X), atol=1e-3)


def test_category_name_prior_adds_the_names_similarity_to_every_score(purchases_sample: pd.DataFrame) -> None:
    frame = schema.coerce(purchases_sample.head(600), labeled=True)
    with_prior = fit_model(frame)
    without = fit_model(frame, {"classifier__prototype_weight": 0.0})
    X = with_prior[0].transform(frame[schema.FEATURE_COLUMNS])
    similarity = (X @ category_prototypes(with_prior[0], with_prior.classes_).T).toarray()
    difference = with_prior[-1].decision_function(X) - without[-1].decision_function(X)
    np.testing.assert_allclose(difference, PROTOTYPE_WEIGHT * similarity, atol=1e-4)
    assert similarity.max() > 0.3
    # the temperature was fitted on the scores with the prior, so it differs
    assert with_prior[-1].temperature_ != without[-1].temperature_


def test_prototypes_of_the_wrong_shape_are_refused(purchases_sample: pd.DataFrame) -> None:
    frame = schema.coerce(purchases_sample.head(300), labeled=True)
    X = build_preprocessor(min_df=2).fit_transform(frame)
    y = frame["category"].to_numpy()
    wrong = sparse.csr_matrix((len(np.unique(y)) - 1, X.shape[1]))
    with pytest.raises(ValueError, match="one row per category"):
        TemperatureScaledSVC().fit(X, y, prototypes=wrong)
