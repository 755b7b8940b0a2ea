"""A linear SVM whose scores become probabilities by temperature scaling, fitted in parallel.

scikit-learn's ``CalibratedClassifierCV`` refuses categories with fewer examples than folds and,
given explicit folds, fills the scores of categories a fold never saw with the smallest float,
which overflows temperature scaling. Purchase data has many single-example categories, so this
estimator does the ``ensemble=False`` calibration itself with finite fills: out-of-fold scores
from folds grouped by description, one temperature fitted on them by log-loss, applied to the SVM
trained on all rows. One parameter for all classes cannot overfit the rare ones and never changes
which class wins.

Speed: liblinear's one-vs-rest trains one binary problem per category, one after the other. The
categories are split into blocks, each block's problems trained as one task (the other categories
merged into a single "rest" label give exactly the same binary problems), so the blocks run side
by side on joblib's backend — the Dask workers in ``ml train``. The temperature, a single number,
is fitted on a capped sample, which keeps the calibration fits small. Rows that are the same in
feature space and category (the same item listed by several facilities or bought again) are fitted
once, weighted by how many there are: the same SVM objective, in the shipped data 20,643 distinct
rows of 36,644, so each pass of liblinear's coordinate descent is that much shorter.

Prior knowledge: rows passed as ``prototypes`` (one per category, such as the category's name in
the feature space, :func:`ml.features.category_prototypes`) are added, times ``prototype_weight``,
to that category's SVM weights, in the final model and in each calibration fold's model alike, so
the temperature is fitted on the scores the model will give.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GroupKFold
from sklearn.svm import LinearSVC
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import check_is_fitted

#: liblinear's stopping tolerance. Measured on the shipped data's validation split: from its default
#: 1e-4 up to 0.5 accuracy and macro-F1 stay within 0.001 while the fit gets several times faster;
#: at 1.0 macro-F1 drops by 0.018. 0.4 keeps a margin below that edge. The search's plain SVM uses it.
SVM_TOLERANCE = 0.4
#: The calibrated model's tolerance, on distinct rows weighted by their count. Measured by
#: bench/training.py's evaluations against the fit on every row at 0.4: 0.4 on distinct rows kept the
#: facility folds' mean (accuracy +0.0002, macro-F1 +0.0005) but lost 0.0065 macro-F1 on the shipped
#: split (weighted rows stop liblinear earlier); 0.2 keeps both within 0.0003 at 0.78x the SVM time.
WEIGHTED_SVM_TOLERANCE = 0.2
#: Weight of the category-name prototypes. Chosen on nine re-drawn hash splits, never the shipped
#: one: mean macro-F1 change +0.003 at 0.5, +0.008 at 0.8, +0.008 at 1.0; accuracy +0.001 at each.
#: On fresh draws seen by no choice, 0.8 gave +0.004 on 10-17 (5 up, 3 down) and no change on 18-25
#: (accuracy +0.001); on the shipped split -0.005. Kept: a category's name does not depend on how one
#: hospital words its descriptions, which these within-hospital splits cannot show.
PROTOTYPE_WEIGHT = 0.8
#: Label standing for "every category outside this block" (sorts before any real category).
_REST = "\x00rest"


def fit_one_vs_rest_block(
    svm: LinearSVC, X: Any, y: np.ndarray, weights: np.ndarray, block: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and intercepts of the one-vs-rest problems of ``block``'s categories."""
    labels = np.where(np.isin(y, block), y, _REST).astype(object)
    svm.fit(X, labels, sample_weight=weights)
    if len(svm.classes_) == 2:  # one binary problem: coef_ scores classes_[1] against classes_[0]
        coef = np.vstack([-svm.coef_, svm.coef_])
        intercept = np.concatenate([-svm.intercept_, svm.intercept_])
    else:
        coef, intercept = svm.coef_, svm.intercept_
    rows = np.searchsorted(svm.classes_, block)
    # float32 as the assembled model keeps them: half the bytes sent back from a Dask worker
    return coef[rows].astype(np.float32), intercept[rows]


def _float32(X: Any) -> Any:
    return X.astype(np.float32, copy=False)


def distinct_rows(X: Any, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each distinct (features, label) pair, and how many rows each stands for."""
    rows = sparse.csr_matrix(X)
    rows.sort_indices()
    keys = [
        rows.indices[start:end].tobytes() + rows.data[start:end].tobytes() + str(label).encode()
        for start, end, label in zip(rows.indptr[:-1], rows.indptr[1:], y, strict=True)
    ]
    _, first, counts = np.unique(np.array(keys, dtype=object), return_index=True, return_counts=True)
    order = np.argsort(first)  # keep the rows' original order
    return first[order], counts[order].astype(np.float64)


def fit_temperature(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The temperature minimising the (weighted) log-loss of ``softmax(scores / T)`` (searched on log T)."""
    rows = np.arange(len(labels))

    def log_loss(log_t: float) -> float:
        return float(-np.average(log_softmax(scores / np.exp(log_t), axis=1)[rows, labels], weights=weights))

    return float(np.exp(minimize_scalar(log_loss, bounds=(-5.0, 3.0), method="bounded").x))


class TemperatureScaledSVC(ClassifierMixin, BaseEstimator):
    """One-vs-rest ``LinearSVC`` with ``predict_proba`` from temperature scaling.

    :param C: the SVM's regularisation (larger: fits rare categories harder).
    :param tol: the SVM's stopping tolerance (:data:`WEIGHTED_SVM_TOLERANCE`).
    :param folds: out-of-fold folds for the temperature; ``groups`` passed to :meth:`fit` keep
        duplicates of one description inside one fold.
    :param calibration_rows: the most rows the temperature is fitted on (a random sample of groups).
    :param blocks: how many parallel tasks the categories are split into.
    :param n_jobs: joblib workers (``-1`` with the Dask backend uses the whole cluster).
    :param prototype_weight: how much of the ``prototypes`` passed to :meth:`fit` is added.
    """

    def __init__(
        self,
        C: float = 0.5,
        tol: float = WEIGHTED_SVM_TOLERANCE,
        folds: int = 2,
        calibration_rows: int = 6_000,
        blocks: int = 4,
        n_jobs: int | None = None,
        prototype_weight: float = PROTOTYPE_WEIGHT,
    ) -> None:
        self.C = C
        self.tol = tol
        self.folds = folds
        self.calibration_rows = calibration_rows
        self.blocks = blocks
        self.n_jobs = n_jobs
        self.prototype_weight = prototype_weight

    def fit(self, X: Any, y: Any, groups: Any = None, prototypes: Any = None) -> TemperatureScaledSVC:
        """Fit on ``X``; ``prototypes``, if given, has one row per category in sorted order."""
        y = np.asarray(y, dtype=object)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        distinct, weights = distinct_rows(X, y)
        X, y, groups = X[distinct], y[distinct], groups[distinct]
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"need at least two categories to train, got {list(self.classes_)}")
        if prototypes is not None and prototypes.shape != (len(self.classes_), X.shape[1]):
            raise ValueError(
                f"prototypes must have one row per category and one column per feature, "
                f"{(len(self.classes_), X.shape[1])}; got {prototypes.shape}"
            )
        calibration = self._calibration_rows(groups, weights)
        folds = [
            (calibration[train], calibration[test])
            for train, test in GroupKFold(n_splits=self.folds).split(calibration, groups=groups[calibration])
        ]
        # The full model and each fold's model, every one split into blocks: all independent tasks.
        # One object per row set, shared by its blocks: joblib's Dask backend ships each once.
        datasets = [(X, y, weights), *((X[train], y[train], weights[train]) for train, _ in folds)]
        tasks = [(model, block) for model, (_, labels, _) in enumerate(datasets) for block in self._blocks(labels)]
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(fit_one_vs_rest_block)(LinearSVC(C=self.C, tol=self.tol, random_state=0), *datasets[model], block)
            for model, block in tasks
        )
        models = [
            self._assemble([(block, result) for (m, block), result in zip(tasks, results, strict=True) if m == model])
            for model in range(len(datasets))
        ]
        if prototypes is not None:
            prior = sparse.coo_matrix(prototypes)
            for coef, _, seen in models:
                kept = seen[prior.row]  # a fold's unseen categories keep their below-every-score fill
                np.add.at(coef, (prior.row[kept], prior.col[kept]), self.prototype_weight * prior.data[kept])
        coef, self.intercept_, _ = models[0]
        # (features, classes), C-contiguous float32: a sparse float32 row times this is a fast
        # sparse-dense product; coef_.T of another dtype is copied and converted on every call.
        self.weights_ = np.ascontiguousarray(coef.T)
        scores, labels, row_weights = [], [], []
        for (_, test), (coef, intercept, seen) in zip(folds, models[1:], strict=True):
            fold_scores = (
                safe_sparse_dot(_float32(X[test]), np.ascontiguousarray(coef.T), dense_output=True) + intercept
            )
            # a category this fold's model never saw scores below every seen one, finitely
            fold_scores[:, ~seen] = fold_scores[:, seen].min() - 1.0
            scores.append(fold_scores)
            labels.append(np.searchsorted(self.classes_, y[test]))
            row_weights.append(weights[test])
        self.temperature_ = fit_temperature(np.vstack(scores), np.concatenate(labels), np.concatenate(row_weights))
        return self

    def _calibration_rows(self, groups: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Rows of a random sample of whole groups, standing for at most ``calibration_rows`` rows."""
        names, index = np.unique(groups, return_inverse=True)
        sizes = np.bincount(index, weights=weights)
        order = np.random.default_rng(0).permutation(len(names))
        kept = names[order][np.cumsum(sizes[order]) <= self.calibration_rows]
        # a hash lookup: np.isin sorts object arrays, which took ~1 s of every full fit
        return np.flatnonzero(pd.Series(groups).isin(kept))

    def _blocks(self, y: np.ndarray) -> list[np.ndarray]:
        """Categories dealt round-robin by frequency, so blocks take about equally long."""
        present, counts = np.unique(y, return_counts=True)
        by_size = present[np.argsort(-counts, kind="stable")]
        n_blocks = max(1, min(self.blocks, len(present) // 2))
        return [np.sort(by_size[i::n_blocks]) for i in range(n_blocks)]

    def _assemble(
        self, fitted: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (n_classes, n_features) float32 matrix from a model's blocks, and which rows it has."""
        n_features = fitted[0][1][0].shape[1]
        coef = np.zeros((len(self.classes_), n_features), dtype=np.float32)
        intercept = np.zeros(len(self.classes_))
        seen = np.zeros(len(self.classes_), dtype=bool)
        for block, (block_coef, block_intercept) in fitted:
            rows = np.searchsorted(self.classes_, block)
            coef[rows], intercept[rows], seen[rows] = block_coef, block_intercept, True
        return coef, intercept, seen

    @property
    def coef_(self) -> np.ndarray:
        """The (classes, features) weights, as scikit-learn's linear models name them."""
        return self.weights_.T

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "weights_")
        return safe_sparse_dot(_float32(X), self.weights_, dense_output=True) + self.intercept_

    def predict_proba(self, X: Any) -> np.ndarray:
        return softmax(self.decision_function(X) / self.temperature_, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
