from __future__ import annotations

import numpy as np
import pandas as pd

from ml import schema
from ml.calibration import fit_temperature
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


def test_category_blocks_train_the_same_one_vs_rest_problems(purchases_sample: pd.DataFrame) -> None:
    """Splitting the categories into parallel blocks must not change the model."""
    from sklearn.svm import LinearSVC

    from ml.calibration import TemperatureScaledSVC
    from ml.features import build_preprocessor

    frame = schema.coerce(purchases_sample, labeled=True)
    X = build_preprocessor(min_df=2).fit_transform(frame)
    y = frame["category"].to_numpy()
    blocked = TemperatureScaledSVC(tol=1e-4, blocks=3).fit(X, y)
    plain = LinearSVC(C=0.5, tol=1e-4).fit(X, y)
    assert np.allclose(blocked.decision_function(X), plain.decision_function(X), atol=1e-3)
    assert (blocked.predict(X) == plain.predict(X)).all()
