"""A model version's validation-time confidence profile: the reference its drift alerts compare with.

Training stores it in the version's metadata (``validation_profile``); the service exports it as
gauges beside the live figures, so an alert compares a version's live mean confidence and review
share with what the *same* version produced on held-out data, not with a fixed number that a better
or worse model would trip on its first day.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PROFILE_KEY = "validation_profile"
"""The metadata key training writes and the service reads."""

#: Percentiles 0..100 of the validation confidence: enough to read the review share at any serving
#: threshold to within 1 %, in under 2 KB of metadata.
_PERCENTILES = np.linspace(0.0, 1.0, 101)


def validation_profile(confidence: np.ndarray) -> dict[str, Any]:
    """The profile of the confidences a model gave its validation rows."""
    values = np.asarray(confidence, dtype=float)
    if values.size == 0:
        raise ValueError("a validation profile needs at least one validation prediction")
    return {
        "rows": int(values.size),
        "mean_confidence": round(float(values.mean()), 6),
        "confidence_percentiles": [round(float(q), 6) for q in np.quantile(values, _PERCENTILES)],
    }


def review_share(profile: dict[str, Any], threshold: float) -> float:
    """Share of validation rows the serving threshold would flag (confidence below it)."""
    percentiles = np.asarray(profile["confidence_percentiles"], dtype=float)
    # Each stored percentile stands for 1/len of the rows; count those strictly under the threshold.
    return float(np.searchsorted(percentiles, threshold, side="left")) / len(percentiles)
