"""Prometheus metrics for operations and drift, all named ``purchase_classifier_serve_*``.

Drift shows as a change in the category mix (``predictions_total``), in the confidence histogram and
in the share flagged for review; operations watch latency, status codes, batch sizes and reloads.
Each app owns its registry so several apps in one process (tests, benchmarks) never collide.

Labels ``model_version`` (the version id) and ``role`` (``latest`` or ``candidate``) are on every
per-prediction metric (``predictions_total``, ``confidence``, ``review_flagged_total``,
``review_share``, ``model_call_duration_seconds``) and on ``model_reloads_total`` (``role`` only),
so the same alerts watch LATEST and a candidate. In shadow mode the candidate's predictions are
counted under ``role="candidate"`` although they are not served; in canary mode they are served.

Candidate metrics:

- ``purchase_classifier_serve_shadow_comparisons_total{model_version, result}``: records the
  candidate (``model_version``) scored in shadow mode, by ``result``: ``agree`` (same category as
  LATEST), ``disagree``, or ``error`` (the candidate's call failed; LATEST's answer was unaffected).
- ``purchase_classifier_serve_candidate_ready``: 1 while a verified candidate is loaded and used.
- ``purchase_classifier_serve_candidate_info{version, mode}``: the candidate and the mode.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from ml.decisions import review_threshold
from ml.reference import PROFILE_KEY, review_share

PREFIX = "purchase_classifier_serve"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_CONFIDENCE_BUCKETS = tuple(round(x, 2) for x in np.linspace(0.1, 1.0, 10))

#: The labels of every per-prediction metric: the version id and ``latest`` or ``candidate``.
_VERSION = ["model_version", "role"]

#: How many recent predictions the review-share gauge covers.
REVIEW_WINDOW = 1000


class ServeMetrics:
    """The service's metrics in their own registry (exposed at ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "HTTP requests by route template and status",
            ["route", "status"],
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size_records", "Records per model call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            f"{PREFIX}_model_call_duration_seconds",
            "Time of one model call (a whole batch) by model version",
            _VERSION,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            f"{PREFIX}_predictions_total",
            "Predicted records by category and model version",
            ["category", *_VERSION],
            registry=r,
        )
        self.confidence = Histogram(
            f"{PREFIX}_confidence",
            "Confidence of the predicted category by model version",
            _VERSION,
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.review_flagged = Counter(
            f"{PREFIX}_review_flagged_total", "Predictions under the review threshold", _VERSION, registry=r
        )
        self.review_share = Gauge(
            f"{PREFIX}_review_share",
            f"Share of the model version's last {REVIEW_WINDOW} predictions flagged for review",
            _VERSION,
            registry=r,
        )
        self.shadow_comparisons = Counter(
            f"{PREFIX}_shadow_comparisons_total",
            "Records the candidate scored in shadow mode, by agreement with LATEST (agree, disagree, error)",
            ["model_version", "result"],
            registry=r,
        )
        self.candidate_ready = Gauge(
            f"{PREFIX}_candidate_ready", "1 while a verified candidate is loaded and used", registry=r
        )
        self.candidate_info = Info(
            f"{PREFIX}_candidate", "The candidate version (empty when none) and the candidate mode", registry=r
        )
        self.model_info = Info(f"{PREFIX}_model", "The model version being served", registry=r)
        self.model_ready = Gauge(f"{PREFIX}_model_ready", "1 when a verified model is loaded", registry=r)
        self.reloads = Counter(
            f"{PREFIX}_model_reloads_total",
            "Model loads by result (success, failure) and role (latest, candidate)",
            ["result", "role"],
            registry=r,
        )
        # Each served version's validation-time figures (ml/reference.py): the drift alerts' reference.
        self.reference_confidence = Gauge(
            f"{PREFIX}_reference_mean_confidence",
            "Mean confidence of the model version on its validation split",
            ["model_version"],
            registry=r,
        )
        self.reference_review_share = Gauge(
            f"{PREFIX}_reference_review_share",
            "Share of the model version's validation rows under this service's review threshold",
            ["model_version"],
            registry=r,
        )
        self._recent_flags: dict[tuple[str, str], deque[bool]] = {}
        self._recent_lock = threading.Lock()  # the model thread observes, the reload thread forgets
        for result in ("success", "failure"):
            for role in ("latest", "candidate"):
                self.reloads.labels(result=result, role=role)

    def observe_predictions(
        self, version: str, role: str, categories: np.ndarray, confidence: np.ndarray, flagged: np.ndarray
    ) -> None:
        """Record one model call's outputs (called from the model thread, once per call)."""
        values, counts = np.unique(categories, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self.predictions.labels(category=str(value), model_version=version, role=role).inc(count)
        histogram = self.confidence.labels(model_version=version, role=role)
        for c in confidence.tolist():
            histogram.observe(c)
        n_flagged = int(flagged.sum())
        if n_flagged:
            self.review_flagged.labels(model_version=version, role=role).inc(n_flagged)
        with self._recent_lock:
            recent = self._recent_flags.setdefault((version, role), deque(maxlen=REVIEW_WINDOW))
            recent.extend(flagged.tolist())
            self.review_share.labels(model_version=version, role=role).set(sum(recent) / len(recent))

    def keep_review_shares(self, served: set[tuple[str, str]]) -> None:
        """Drop the review-share gauges of ``(version, role)`` pairs no longer served (a gauge would
        otherwise report a departed version's last value forever)."""
        with self._recent_lock:
            for key in set(self._recent_flags) - served:
                del self._recent_flags[key]
                self.review_share.remove(*key)

    def set_references(self, models: Iterable[tuple[str, dict[str, Any]]], override: float | None) -> None:
        """Export the validation figures of exactly the ``(version, metadata)`` pairs being served,
        the review share at each version's threshold (``override``, ``ML_REVIEW_THRESHOLD``, when set).

        A version trained before profiles were stored has none and exports none (no drift reference).
        """
        self.reference_confidence.clear()
        self.reference_review_share.clear()
        for version, metadata in models:
            profile = metadata.get(PROFILE_KEY)
            if profile is None:
                continue
            self.reference_confidence.labels(model_version=version).set(profile["mean_confidence"])
            threshold, _ = review_threshold(metadata, override)
            self.reference_review_share.labels(model_version=version).set(review_share(profile, threshold))
