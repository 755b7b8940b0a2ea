"""A linear SVM whose scores become probabilities by temperature scaling.

scikit-learn's ``CalibratedClassifierCV`` refuses categories with fewer examples than folds and,
given explicit folds, fills the scores of categories a fold never saw with the smallest float,
which overflows temperature scaling. Purchase data has many single-example categories, so this
estimator does the same ``ensemble=False`` calibration with finite fills: out-of-fold scores from
folds grouped by description, one temperature fitted on them by log-loss, applied to the SVM
trained on all rows. One parameter for all classes cannot overfit the rare ones and never changes
which class wins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GroupKFold
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

#: liblinear's stopping tolerance. At 0.1 instead of its default 1e-4 the fit takes a fraction of
#: the time and predicts the same classes on the shipped data's validation split (bench/training.py).
SVM_TOLERANCE = 0.1


def _scores(classifier: LinearSVC, X: Any) -> np.ndarray:
    """Decision scores as an (n, k) matrix, also for two classes."""
    scores = classifier.decision_function(X)
    return np.column_stack([-scores / 2, scores / 2]) if scores.ndim == 1 else scores


def _fit_svm(svm: LinearSVC, X: Any, y: np.ndarray) -> LinearSVC | None:
    return svm.fit(X, y) if len(np.unique(y)) > 1 else None


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the log-loss of ``softmax(scores / T)`` (searched on log T)."""
    rows = np.arange(len(labels))

    def log_loss(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=1)[rows, labels].mean())

    return float(np.exp(minimize_scalar(log_loss, bounds=(-5.0, 3.0), method="bounded").x))


class TemperatureScaledSVC(ClassifierMixin, BaseEstimator):
    """``LinearSVC`` with ``predict_proba`` from temperature scaling.

    :param C: the SVM's regularisation (larger: fits rare categories harder).
    :param folds: out-of-fold folds for the temperature; ``groups`` passed to :meth:`fit` keep
        duplicates of one description inside one fold.
    :param tol: the SVM's stopping tolerance (:data:`SVM_TOLERANCE`).
    :param n_jobs: parallel SVM fits (joblib; ``-1`` with the Dask backend uses the cluster).
    """

    def __init__(self, C: float = 0.5, folds: int = 2, tol: float = SVM_TOLERANCE, n_jobs: int | None = None) -> None:
        self.C = C
        self.folds = folds
        self.tol = tol
        self.n_jobs = n_jobs

    def _svm(self) -> LinearSVC:
        return LinearSVC(C=self.C, tol=self.tol)

    def fit(self, X: Any, y: Any, groups: Any = None) -> TemperatureScaledSVC:
        y = np.asarray(y)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        folds = list(GroupKFold(n_splits=self.folds).split(X, y, groups))
        # The full fit and the fold fits are independent: under joblib's Dask backend they run on
        # the workers side by side.
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_svm)(self._svm(), X[rows], y[rows])
            for rows in [np.arange(len(y)), *(train for train, _ in folds)]
        )
        self.classifier_, fold_svms = fitted[0], fitted[1:]
        self.classes_ = self.classifier_.classes_
        out_of_fold = np.zeros((len(y), len(self.classes_)))
        for (_, test), fold_svm in zip(folds, fold_svms, strict=True):
            if fold_svm is None:  # a fold with a single category has no scores to learn from
                continue
            fold_scores = _scores(fold_svm, X[test])
            # a category this fold never saw scores below every seen one, finitely
            out_of_fold[test] = fold_scores.min() - 1.0
            out_of_fold[np.ix_(test, np.searchsorted(self.classes_, fold_svm.classes_))] = fold_scores
        self.temperature_ = fit_temperature(out_of_fold, np.searchsorted(self.classes_, y))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return _scores(self.classifier_, X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return softmax(self.decision_function(X) / self.temperature_, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
