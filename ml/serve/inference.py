"""Records in, predictions out: one model call per batch, not per request.

Requests hand over plain column lists (no pandas anywhere on this path); the batch concatenates
them into one set of columns for :func:`ml.model.predict` and splits the results back in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ml.model import Predictions, predict
from ml.schema import FEATURE_COLUMNS


@dataclass
class Columns:
    """One request's records as columns (the shape both APIs decode into)."""

    description: list[str] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)  # NaN when missing
    contract: list[str] = field(default_factory=list)
    department: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.description)

    def add(self, description: str, cost: float | None, contract: str | None, department: str | None) -> None:
        self.description.append(description)
        self.cost.append(math.nan if cost is None else float(cost))
        self.contract.append(contract or "")
        self.department.append(department or "")


def to_columns(parts: list[Columns]) -> dict[str, list[Any]]:
    """One batch's records as the column lists :func:`ml.model.predict` takes."""
    if len(parts) == 1:
        return vars(parts[0])
    return {name: [value for part in parts for value in getattr(part, name)] for name in FEATURE_COLUMNS}


@dataclass(frozen=True)
class Result:
    """Predictions for one request's rows, as plain Python values ready for JSON."""

    category: list[str]
    confidence: list[float]
    top_categories: list[list[str]]
    top_probabilities: list[list[float]]
    needs_review: list[bool]


def run_model(pipeline: Any, parts: list[Columns], top_k: int, threshold: float) -> tuple[Predictions, list[Result]]:
    """Predict a batch and split it back into one :class:`Result` per request."""
    predictions = predict(pipeline, to_columns(parts), top_k=top_k)
    category = predictions.category.astype(str).tolist()
    confidence = predictions.confidence.astype(float).tolist()
    top_categories = predictions.top_categories.astype(str).tolist()
    top_probabilities = predictions.top_probabilities.astype(float).tolist()
    needs_review = predictions.needs_review(threshold).tolist()
    results, start = [], 0
    for part in parts:
        end = start + len(part)
        results.append(
            Result(
                category[start:end],
                confidence[start:end],
                top_categories[start:end],
                top_probabilities[start:end],
                needs_review[start:end],
            )
        )
        start = end
    return predictions, results
