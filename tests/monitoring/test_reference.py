"""The validation-time profile a model version carries, and the reference gauges the service exports."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ml.reference import PROFILE_KEY, review_share, validation_profile
from ml.serve.metrics import ServeMetrics


def test_profile_reads_back_the_share_under_any_threshold_to_one_percent() -> None:
    confidence = np.random.default_rng(0).beta(5, 2, size=5000)
    profile = validation_profile(confidence)
    assert profile["rows"] == 5000
    assert profile["mean_confidence"] == pytest.approx(confidence.mean(), abs=1e-6)
    for threshold in (0.3, 0.5, 0.6, 0.75, 0.9):
        assert review_share(profile, threshold) == pytest.approx((confidence < threshold).mean(), abs=0.011)


def test_profile_edges() -> None:
    profile = validation_profile(np.array([0.4, 0.9]))
    assert review_share(profile, 0.1) == 0.0
    assert review_share(profile, 0.95) == 1.0
    with pytest.raises(ValueError, match="at least one validation prediction"):
        validation_profile(np.array([]))


def samples(metrics: ServeMetrics, name: str) -> dict[str, float]:
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    return {s.labels["model_version"]: s.value for f in families for s in f.samples if s.name == name}


def test_service_exports_exactly_the_served_versions_references() -> None:
    metrics = ServeMetrics()
    low = validation_profile(np.linspace(0.2, 1.0, 101))
    high = validation_profile(np.full(10, 0.95))
    metrics.set_references([("v1", {PROFILE_KEY: low}), ("v2", {PROFILE_KEY: high}), ("v0", {})], 0.5)
    assert samples(metrics, "purchase_classifier_serve_reference_mean_confidence") == pytest.approx(
        {"v1": 0.6, "v2": 0.95}
    )
    shares = samples(metrics, "purchase_classifier_serve_reference_review_share")
    assert shares["v1"] == pytest.approx(0.37, abs=0.011) and shares["v2"] == 0.0
    metrics.set_references([("v2", {PROFILE_KEY: high})], 0.5)  # v1 no longer served
    assert set(samples(metrics, "purchase_classifier_serve_reference_mean_confidence")) == {"v2"}
