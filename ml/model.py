"""The classifier: a scikit-learn pipeline with calibrated probabilities, and how it predicts.

Every prediction carries a confidence and the top-k alternatives, because experts review what the
model is unsure of; probabilities therefore have to mean something, hence the calibration step
(:mod:`ml.calibration`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from ml.calibration import SVM_TOLERANCE, TemperatureScaledSVC
from ml.features import CompiledFeatures, build_preprocessor, category_prototypes, normalise_column
from ml.schema import CATEGORY, COST, DEPARTMENT, DESCRIPTION, FEATURE_COLUMNS

#: The final model's parameters when no search is run (the best full-data fit measured by
#: bench/training.py on the shipped data's split; a search on a sample may pick others).
DEFAULT_PARAMS: dict[str, Any] = {
    "features__description__featureunion__chars__ngram_range": (2, 4),
    "classifier__C": 0.5,
}

#: The grid the hyper-parameter search explores (kept small: every point is a CV of full fits).
PARAM_GRID: dict[str, list[Any]] = {
    "features__description__featureunion__chars__ngram_range": [(2, 4), (2, 5)],
    "classifier__C": [0.5, 1.0],
}


def build_pipeline(params: dict[str, Any] | None = None, *, calibrated: bool = True) -> Pipeline:
    """A fresh, unfitted pipeline with ``params`` applied (names as in :data:`PARAM_GRID`).

    The search scores the plain SVM: the calibrated one predicts with the same SVM trained on
    the same rows (temperature scaling never changes the arg-max), at a third of the cost. It has
    no category-name prior either, whose weight is fixed (:data:`~ml.calibration.PROTOTYPE_WEIGHT`).
    """
    classifier = TemperatureScaledSVC() if calibrated else LinearSVC(tol=SVM_TOLERANCE, random_state=0)
    pipeline = Pipeline([("features", build_preprocessor(min_df=2)), ("classifier", classifier)])
    return pipeline.set_params(**{**DEFAULT_PARAMS, **(params or {})})


def fit_model(frame: pd.DataFrame, params: dict[str, Any] | None = None, *, n_jobs: int | None = None) -> Pipeline:
    """Fit the calibrated pipeline on labelled records, calibration folds grouped by description.

    The steps are fitted one after the other because the classifier's category-name prototypes
    live in the feature space the fitted preprocessor defines.
    ``n_jobs=-1`` inside ``joblib.parallel_backend("dask")`` runs the SVM fits on the Dask workers.
    """
    groups = normalise_column(frame[DESCRIPTION])
    pipeline = build_pipeline(params).set_params(classifier__n_jobs=n_jobs)
    features = pipeline[0].fit_transform(frame[FEATURE_COLUMNS], frame[CATEGORY])
    prototypes = category_prototypes(pipeline[0], np.unique(frame[CATEGORY].to_numpy(dtype=object)))
    pipeline[-1].fit(features, frame[CATEGORY], groups=groups, prototypes=prototypes)
    return pipeline


def _baseline_log_cost(values: Any) -> np.ndarray:
    return np.log1p(np.nan_to_num(np.asarray(values, dtype="float64")))


def build_baseline() -> Pipeline:
    """The plain reference every evaluation reports beside the model, fitted with ``fit(frame, categories)``.

    TF-IDF character 2–5-grams of the description, one-hot department, log cost, ``LinearSVC(C=0.5)``:
    what a practitioner would try first. A gain is only a gain when it shows against this.
    """
    features = ColumnTransformer(
        [
            ("description", TfidfVectorizer(analyzer="char", ngram_range=(2, 5)), DESCRIPTION),
            ("department", OneHotEncoder(handle_unknown="ignore"), [DEPARTMENT]),
            ("cost", make_pipeline(FunctionTransformer(_baseline_log_cost), StandardScaler()), [COST]),
        ]
    )
    return Pipeline([("features", features), ("classifier", LinearSVC(C=0.5))])


@dataclass(frozen=True)
class Predictions:
    """Column-oriented predictions; row ``i`` belongs to input row ``i``."""

    category: np.ndarray
    confidence: np.ndarray
    top_categories: np.ndarray  # (n, k) best first
    top_probabilities: np.ndarray  # (n, k)

    def needs_review(self, threshold: float) -> np.ndarray:
        return self.confidence < threshold


#: Each fitted pipeline's :class:`CompiledFeatures`, built on its first prediction.
_compiled: weakref.WeakKeyDictionary[Pipeline, CompiledFeatures] = weakref.WeakKeyDictionary()


def predict(pipeline: Pipeline, records: Any, top_k: int = 3) -> Predictions:
    """Predict categories with confidence and the ``top_k`` most likely classes per row.

    ``records`` is a DataFrame or a mapping of column lists (the schema's feature columns). The
    features come from :class:`~ml.features.CompiledFeatures`, equal to the pipeline's own
    ``transform`` without its fixed per-call cost.
    """
    if pipeline not in _compiled:
        _compiled[pipeline] = CompiledFeatures(pipeline[0])
    probabilities = pipeline[-1].predict_proba(_compiled[pipeline].transform(records))
    classes = pipeline.classes_
    k = min(top_k, len(classes))
    # argpartition then a sort of only k columns: cheaper than sorting all classes per row.
    top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    top_probs = np.take_along_axis(probabilities, top, axis=1)
    order = np.argsort(-top_probs, axis=1)
    top = np.take_along_axis(top, order, axis=1)
    top_probs = np.take_along_axis(top_probs, order, axis=1)
    return Predictions(
        category=classes[top[:, 0]],
        confidence=top_probs[:, 0],
        top_categories=classes[top],
        top_probabilities=top_probs,
    )
