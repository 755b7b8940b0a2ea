"""The served model and its hot reload.

The current model is one reference, replaced in a single assignment: a request takes the reference
when it starts and keeps it, so requests in flight finish on the version they started with while new
ones see the new version. A candidate version is loaded, sha256-verified (by the registry) and made
to predict once before the swap; if any step fails the old version keeps serving, the failure is
logged and counted, and that version is not retried until ``LATEST`` moves again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ml.model import predict
from ml.registry import LoadedModel, ModelRegistry
from ml.serve.metrics import ServeMetrics
from ml.serve.settings import ServeSettings

log = logging.getLogger(__name__)

#: One plausible record: a model that cannot predict it is not swapped in.
_SMOKE_RECORD = {"description": "SUT SILK 3-0 SA74H", "cost": 10.0, "contract": "", "department": ""}


@dataclass
class ModelState:
    """What is served now, and why nothing is when nothing is."""

    settings: ServeSettings
    metrics: ServeMetrics
    current: LoadedModel | None = None
    #: Why the service is not ready (no model yet) or why the last candidate was refused.
    reason: str = "no model loaded yet"
    last_error: str | None = None
    _failed_version: str | None = None
    _registry: ModelRegistry | None = field(default=None, repr=False)

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = ModelRegistry(self.settings.store, self.settings.model_name)
        return self._registry

    def describe(self) -> dict[str, Any]:
        """Metadata for ``/v1/model``: the registry's metadata plus where the process runs."""
        model = self.current  # one read: a swap in between must not mix two versions
        if model is None:
            return {}
        return {
            **model.metadata,
            "version": model.version,
            "name": self.settings.model_name,
            "image_digest": self.settings.image_digest or model.metadata.get("image_digest"),
            "classes": [str(c) for c in model.pipeline.classes_],
        }

    def check_once(self) -> bool:
        """Load ``LATEST`` if it changed (blocking: run it in a thread). True when a swap happened."""
        try:
            latest = self.registry.latest_version()
        except Exception as exc:  # the store is unreachable: keep serving what we have
            self._fail(None, f"cannot read LATEST from {self.settings.store}: {exc}")
            return False
        if latest is None:
            if self.current is None:
                self.reason = f"no LATEST model '{self.settings.model_name}' in {self.settings.store} yet"
            return False
        if (self.current is not None and latest == self.current.version) or latest == self._failed_version:
            return False
        try:
            candidate = self.registry.load(latest)
            frame = pd.DataFrame([_SMOKE_RECORD])
            predict(candidate.pipeline, frame, top_k=self.settings.top_k)
        except Exception as exc:
            self._fail(latest, f"version {latest} refused: {exc}")
            return False
        previous = self.current.version if self.current else None
        self.current = candidate  # the atomic swap
        self.reason = "ready"
        self._failed_version = None
        self.metrics.reloads.labels(result="success").inc()
        self.metrics.model_ready.set(1)
        self.metrics.set_references([(candidate.version, candidate.metadata)], self.settings.review_threshold)
        self.metrics.model_info.info(
            {
                "version": candidate.version,
                "sha256": str(candidate.metadata.get("sha256", "")),
                "image_digest": self.settings.image_digest or "",
            }
        )
        log.info("serving model %s version %s (was %s)", self.settings.model_name, latest, previous)
        return True

    def _fail(self, version: str | None, message: str) -> None:
        self.last_error = message
        if version is not None:
            self._failed_version = version
        if self.current is None:
            self.reason = message
        self.metrics.reloads.labels(result="failure").inc()
        log.error(
            "model reload failed, %s: %s",
            "keeping version " + self.current.version if self.current else "still not ready",
            message,
        )

    async def poll_forever(self) -> None:
        """Check the registry now, then every ``reload_interval_s`` (the lifespan cancels it)."""
        while True:
            try:
                await asyncio.to_thread(self.check_once)
            except Exception:  # a bug here must not kill reloading for the life of the process
                log.exception("unexpected error while checking for a new model")
            await asyncio.sleep(self.settings.reload_interval_s)
