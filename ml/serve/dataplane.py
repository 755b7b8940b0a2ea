"""The one request path both HTTP APIs go through (MLServer's ``handlers/dataplane.py`` shape).

The ``/v1`` and V2 modules are thin adapters: they decode their wire format into
:class:`~ml.serve.inference.Columns` and hand them here, where every record limit is checked, the
served models are chosen and the micro-batcher is called; they encode the answer or render a
:class:`ServeError` in their own error shape. A limit added here holds for both APIs.

Messages name the problem and the limit, never a store path, a stack trace or exception text:
they go to whoever can reach the port.
"""

from __future__ import annotations

import math
from typing import Any

from ml.serve.batching import MicroBatcher
from ml.serve.inference import Columns, Result
from ml.serve.routing import answer
from ml.serve.settings import ServeSettings
from ml.serve.state import Models, ModelState

#: Longest description, contract and department (characters): real purchase lines are under 200;
#: the model's cost grows with the characters it reads (~1 µs each), so a field cannot carry a
#: megabyte of work.
MAX_TEXT_CHARS = 2000
#: Longest record id (characters).
MAX_ID_CHARS = 200


class ServeError(Exception):
    """A request the service refuses: ``status`` and a message naming what was wrong.

    ``record`` and ``field`` say where, when the problem is one value of one record (``/v1``
    reports them as the error's ``loc``, V2 in the message).
    """

    def __init__(self, message: str, status: int = 422, *, record: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.record = record
        self.field = field


class DataPlane:
    """Validation, limits, model choice and the model call for every inference request."""

    def __init__(self, settings: ServeSettings, state: ModelState, batcher: MicroBatcher) -> None:
        self.settings = settings
        self.state = state
        self.batcher = batcher

    # -- models ------------------------------------------------------------------------------------

    def models(self, name: str | None = None, version: str | None = None) -> Models:
        """The models serving ``name`` (default: this server's); a version given must be LATEST's
        (the candidate answers only the records the canary share gives it)."""
        if name is not None and name != self.settings.model_name:
            raise ServeError(f"unknown model '{name}'; this server serves '{self.settings.model_name}'", 404)
        models = self.state.models
        if models is None:
            raise ServeError(f"no model is loaded: {self.state.reason}", 503)
        if version is not None and version != models.latest.version:
            raise ServeError(
                f"model '{self.settings.model_name}' version '{version}' is not loaded "
                f"(serving {models.latest.version})",
                404,
            )
        return models

    def readiness(self) -> dict[str, Any]:
        models = self.state.models
        if models is None:
            return {"ready": False, "reason": self.state.reason}
        return {
            "ready": True,
            "version": models.latest.version,
            "candidate_version": models.candidate.version if models.candidate else None,
            "candidate_mode": self.settings.candidate_mode,
            "last_reload_error": self.state.last_error,
        }

    def describe(self) -> dict[str, Any]:
        self.models()
        return self.state.describe()

    # -- inference ---------------------------------------------------------------------------------

    def check_count(self, n: int) -> None:
        """The records one request may carry (checked by decoders before they build columns)."""
        limit = self.settings.max_request_records
        if n > limit:
            raise ServeError(f"{n} records exceed the limit of {limit} per request (ML_MAX_REQUEST_RECORDS)", 413)

    def check(self, columns: Columns, ids: list[str] | None) -> None:
        """Every per-request and per-field limit; ServeError names the record, field and limit."""
        if not columns:
            raise ServeError("at least one record is required")
        self.check_count(len(columns))
        for field, values in (
            ("description", columns.description),
            ("contract", columns.contract),
            ("department", columns.department),
        ):
            for i, text in enumerate(values):
                if len(text) > MAX_TEXT_CHARS:
                    raise ServeError(
                        f"record {i}: {field} has {len(text)} characters, more than the limit of {MAX_TEXT_CHARS}",
                        record=i,
                        field=field,
                    )
        for i, text in enumerate(columns.description):
            if not text.strip():
                raise ServeError(f"record {i}: description must not be empty", record=i, field="description")
        for i, cost in enumerate(columns.cost):
            if not math.isnan(cost) and (math.isinf(cost) or cost < 0):
                raise ServeError(f"record {i}: cost must be a finite number >= 0, got {cost}", record=i, field="cost")
        for i, record_id in enumerate(ids or ()):
            if not 0 < len(record_id) <= MAX_ID_CHARS:
                raise ServeError(
                    f"record {i}: id must have 1 to {MAX_ID_CHARS} characters, not {len(record_id)}",
                    record=i,
                    field="id",
                )

    async def infer(
        self, columns: Columns, ids: list[str] | None, name: str | None = None, version: str | None = None
    ) -> tuple[Result, Models]:
        """Check the records, then predict them with the versions the candidate mode gives them
        (``ids`` key the canary split; without ids, each record's description does)."""
        models = self.models(name, version)
        self.check(columns, ids)
        return await answer(self.batcher, self.settings, models, columns, ids or columns.description), models
