"""The served models and their hot reload.

What is served is one :class:`Models` pair (``LATEST`` and, in shadow or canary mode, the registry's
``CANDIDATE``), replaced in a single assignment: a request takes the pair when it starts and keeps
it, so requests in flight finish on the versions they started with while new ones see the new pair.
A version is loaded, sha256-verified (by the registry) and made to predict once before it joins a
pair; if any step fails the old pair keeps serving, the failure is logged and counted, and that
version is not tried again (unless the store could not be read: that is retried at the next poll).
A version already loaded is reused, so promoting the candidate swaps it
in without loading it twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ml.errors import InfrastructureError, IntegrityError, NotFoundError
from ml.model import predict
from ml.registry import LoadedModel, ModelRegistry
from ml.serve.metrics import ServeMetrics
from ml.serve.settings import ServeSettings

log = logging.getLogger(__name__)

#: One plausible record: a model that cannot predict it is not swapped in.
_SMOKE_RECORD = {"description": "SUT SILK 3-0 SA74H", "cost": 10.0, "contract": "", "department": ""}


#: Metadata keys that say where something is stored (the training file, the store): not for clients.
_LOCATION_KEYS = frozenset({"source", "path", "store", "uri", "url"})


def public_metadata(value: Any) -> Any:
    """A version's metadata without the locations it records (``/v1/model`` shows it to clients)."""
    if isinstance(value, dict):
        return {k: public_metadata(v) for k, v in value.items() if k not in _LOCATION_KEYS}
    if isinstance(value, list):
        return [public_metadata(v) for v in value]
    return value


def _refusal(exc: BaseException) -> str:
    """What is wrong with a refused version, in words that reveal no path or exception text."""
    if isinstance(exc, IntegrityError):
        return "its artifact or metadata failed verification (corrupt or altered)"
    if isinstance(exc, NotFoundError):
        return "it is missing or incomplete in the store"
    return "it cannot be loaded or cannot predict (the service log says why)"


@dataclass(frozen=True)
class Models:
    """The versions one request uses: ``latest`` always, ``candidate`` in shadow or canary mode."""

    latest: LoadedModel
    candidate: LoadedModel | None = None


@dataclass
class ModelState:
    """What is served now, and why nothing is when nothing is."""

    settings: ServeSettings
    metrics: ServeMetrics
    models: Models | None = None
    #: Why the service is not ready (no model yet). It and ``last_error`` are shown to clients, so
    #: they name the problem without store paths or exception text (the log has those).
    reason: str = "no model loaded yet"
    #: Why the last load failed, until a load leaves the service serving what the pointers name.
    last_error: str | None = None
    _failed_versions: set[str] = field(default_factory=set, repr=False)
    _registry: ModelRegistry | None = field(default=None, repr=False)

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = ModelRegistry(self.settings.store, self.settings.model_name)
        return self._registry

    @property
    def current(self) -> LoadedModel | None:
        """The LATEST version being served."""
        models = self.models
        return models.latest if models else None

    def describe(self) -> dict[str, Any]:
        """Metadata for ``/v1/model``: the registry's metadata plus where the process runs."""
        models = self.models  # one read: a swap in between must not mix two versions
        if models is None:
            return {}
        model = models.latest
        return {
            **public_metadata(model.metadata),
            "version": model.version,
            "name": self.settings.model_name,
            "image_digest": self.settings.image_digest or model.metadata.get("image_digest"),
            "classes": [str(c) for c in model.pipeline.classes_],
            "candidate_version": models.candidate.version if models.candidate else None,
            "candidate_mode": self.settings.candidate_mode,
        }

    def check_once(self) -> bool:
        """Load ``LATEST`` (and ``CANDIDATE``) if they changed (blocking: run it in a thread).

        True when the served pair changed.
        """
        use_candidate = self.settings.candidate_mode != "off"
        try:
            if use_candidate:
                latest, candidate = self.registry.pointed_versions()
            else:
                latest, candidate = self.registry.latest_version(), None
        except Exception as exc:  # the store is unreachable: keep serving what we have
            self._fail(None, "latest", "cannot read the model pointers from the store (retried)", exc)
            return False
        if latest is None:
            if self.models is None:
                self.reason = f"no LATEST model '{self.settings.model_name}' in the store yet"
            return False
        old = self.models
        loaded = {m.version: m for m in (old.latest, old.candidate) if m is not None} if old else {}
        new_latest = loaded.get(latest) or self._load(latest, "latest") or (old.latest if old else None)
        if new_latest is None:
            return False
        new_candidate = None
        if candidate is not None and candidate != new_latest.version:
            new_candidate = loaded.get(candidate) or self._load(candidate, "candidate")
        wanted_candidate = candidate if candidate != new_latest.version else None
        if new_latest.version == latest and (new_candidate.version if new_candidate else None) == wanted_candidate:
            self.last_error = None  # serving what the pointers name: an earlier failure is over
        if old is not None and old.latest is new_latest and old.candidate is new_candidate:
            return False
        self.models = Models(new_latest, new_candidate)  # the atomic swap
        self.reason = "ready"
        self._export(new_latest, new_candidate)
        log.info(
            "serving model %s version %s, candidate %s (mode %s); was %s, candidate %s",
            self.settings.model_name,
            new_latest.version,
            new_candidate.version if new_candidate else None,
            self.settings.candidate_mode,
            old.latest.version if old else None,
            old.candidate.version if old and old.candidate else None,
        )
        return True

    def _load(self, version: str, role: str) -> LoadedModel | None:
        """Load and smoke-test one version; None (logged, counted, never retried) when refused."""
        if version in self._failed_versions:
            return None
        try:
            model = self.registry.load(version)
            predict(model.pipeline, pd.DataFrame([_SMOKE_RECORD]), top_k=self.settings.top_k)
        except InfrastructureError as exc:  # the store, not the version: try again next time
            self._fail(None, role, f"{role} version {version} not loaded: the store could not be read (retried)", exc)
            return None
        except Exception as exc:
            self._fail(version, role, f"{role} version {version} refused: {_refusal(exc)}", exc)
            return None
        self.metrics.reloads.labels(result="success", role=role).inc()
        return model

    def _export(self, latest: LoadedModel, candidate: LoadedModel | None) -> None:
        metrics = self.metrics
        metrics.model_ready.set(1)
        metrics.model_info.info(
            {
                "version": latest.version,
                "sha256": str(latest.metadata.get("sha256", "")),
                "image_digest": self.settings.image_digest or "",
            }
        )
        metrics.candidate_ready.set(1 if candidate else 0)
        metrics.candidate_info.info(
            {"version": candidate.version if candidate else "", "mode": self.settings.candidate_mode}
        )
        served = [(latest, "latest")] + ([(candidate, "candidate")] if candidate else [])
        metrics.keep_review_shares({(model.version, role) for model, role in served})
        metrics.set_references([(model.version, model.metadata) for model, _ in served], self.settings.review_threshold)

    def _fail(self, version: str | None, role: str, message: str, exc: BaseException) -> None:
        """Record a failed load: ``message`` for clients, the exception for the log."""
        self.last_error = message
        if version is not None:
            self._failed_versions.add(version)
        if self.models is None:
            self.reason = message
        self.metrics.reloads.labels(result="failure", role=role).inc()
        log.error(
            "model reload failed, %s: %s: %s",
            "keeping version " + self.models.latest.version if self.models else "still not ready",
            message,
            exc,
        )

    async def poll_forever(self) -> None:
        """Check the registry now, then every ``reload_interval_s`` (the lifespan cancels it)."""
        while True:
            try:
                await asyncio.to_thread(self.check_once)
            except Exception:  # a bug here must not kill reloading for the life of the process
                log.exception("unexpected error while checking for a new model")
            await asyncio.sleep(self.settings.reload_interval_s)
