"""Records in, predictions out: one model call per batch, not per request.

Requests hand over plain column lists (no pandas anywhere on this path); the batch concatenates
them into one set of columns for :func:`ml.model.predict` and splits the results back in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ml.model import Predictions, predict
from ml.registry import LoadedModel
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

    def rows(self, start: int, end: int) -> Columns:
        """Rows ``start:end`` (itself when that is every row)."""
        if start == 0 and end >= len(self):
            return self
        return Columns(
            self.description[start:end], self.cost[start:end], self.contract[start:end], self.department[start:end]
        )

    def take(self, rows: list[int]) -> Columns:
        """The given rows, in that order."""
        return Columns(
            [self.description[i] for i in rows],
            [self.cost[i] for i in rows],
            [self.contract[i] for i in rows],
            [self.department[i] for i in rows],
        )


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
    #: The version that answered each row (two differ only in canary mode).
    model_version: list[str]

    @staticmethod
    def concat(pieces: list[Result]) -> Result:
        """One result of the pieces' rows, in order."""
        if len(pieces) == 1:
            return pieces[0]
        return Result(
            **{
                name: [value for piece in pieces for value in getattr(piece, name)]
                for name in Result.__dataclass_fields__
            }
        )


def interleave(n: int, pieces: list[tuple[list[int], Result]]) -> Result:
    """One result of ``n`` rows from pieces that answered the given rows each."""
    fields: dict[str, list[Any]] = {name: [None] * n for name in Result.__dataclass_fields__}
    for rows, result in pieces:
        for name, values in fields.items():
            for row, value in zip(rows, getattr(result, name), strict=True):
                values[row] = value
    return Result(**fields)


def run_model(
    model: LoadedModel, parts: list[Columns], top_k: int, threshold: float
) -> tuple[Predictions, list[Result]]:
    """Predict a batch and split it back into one :class:`Result` per request."""
    predictions = predict(model.pipeline, to_columns(parts), top_k=top_k)
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
                [model.version] * len(part),
            )
        )
        start = end
    return predictions, results
