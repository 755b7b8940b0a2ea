"""The FastAPI application: the ``/v1`` API, the V2 protocol, health, readiness and metrics.

Handlers do only what each request needs: validate, take the current models (LATEST and, in shadow
or canary mode, the candidate), queue the records for the micro-batcher, and write the JSON answer
directly (no response-model round trip; the models still document the schema in OpenAPI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ml.serve import v2
from ml.serve.batching import MicroBatcher
from ml.serve.inference import Columns
from ml.serve.metrics import ServeMetrics
from ml.serve.routing import answer
from ml.serve.schemas import ClassifyRequest, ClassifyResponse, ModelInfo, Problem
from ml.serve.settings import ServeSettings
from ml.serve.state import Models, ModelState

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status, media_type="application/json")


#: The most of an unwanted request body read (and discarded) so that the client sees the answer.
#: Clients such as ``urllib`` and ``requests`` write the whole body before reading: closing the
#: connection while they still send makes them report a reset instead of the 413 (or 415). Beyond
#: this much (or ``_DRAIN_SECONDS``) the connection is closed anyway: a bound on wasted work.
_DRAIN_BYTES = 64 * 1024 * 1024
_DRAIN_SECONDS = 10.0


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes ``ML_MAX_BODY_BYTES`` (an HTTPException, so that
    FastAPI's body reading passes it on instead of calling it a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (ML_MAX_BODY_BYTES)")


class ObserveMiddleware:
    """Latency and status per route template (bounded label values), and the request rules: JSON
    bodies only (V2 also takes no content type and binary tensor data, as its clients send them),
    at most ``ML_MAX_BODY_BYTES`` of them, and an answer sent before the body is read is sent only
    after the rest of the body (up to a bound) has been read.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs far more per request.
    """

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: ServeMetrics, max_body_bytes: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        received = 0
        body_done = scope["method"] in ("GET", "HEAD")
        headers = dict(scope["headers"])

        async def limited_receive() -> Message:
            nonlocal received, body_done
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)  # before reading: no 100 Continue for such a body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            else:
                body_done = True
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if not body_done:
                    await self._drain(receive, headers, received)
            await send(message)

        try:
            if scope["method"] == "POST" and not _acceptable_body(scope["path"], headers):
                response = _json({"detail": "Content-Type must be application/json"}, 415)
                await response(scope, limited_receive, observed_send)
            else:
                await self.app(scope, limited_receive, observed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(template, scope["method"]).observe(time.perf_counter() - started)
            self.metrics.requests.labels(template, str(status)).inc()

    @staticmethod
    async def _drain(receive: Receive, headers: dict[bytes, bytes], received: int) -> None:
        """Read and drop the rest of the body, unless it is bigger than the bound or the client
        waits for ``100 Continue`` before sending it (then it is never sent)."""
        declared = headers.get(b"content-length", b"")
        if b"100-continue" in headers.get(b"expect", b"").lower() and received == 0:
            return
        if declared.isdigit() and int(declared) > _DRAIN_BYTES:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_SECONDS):
                while received <= _DRAIN_BYTES:
                    message = await receive()
                    received += len(message.get("body", b""))
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return


def _acceptable_body(path: str, headers: dict[bytes, bytes]) -> bool:
    value = headers.get(b"content-type")
    if value is None:
        return path.startswith("/v2/")  # V2 clients (tritonclient) send JSON without a content type
    media = value.split(b";", 1)[0].strip().lower()
    if media == b"application/octet-stream":
        return path.startswith("/v2/") and v2.HEADER_LENGTH.encode() in headers
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """Build the service; the model loads in the background once the app starts."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    state = ModelState(settings, metrics)
    batcher = MicroBatcher(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        poller = asyncio.create_task(state.poll_forever(), name="model-poller")
        try:
            yield
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await batcher.stop()

    app = FastAPI(
        title="purchase-classifier",
        summary="Classify hospital purchase lines; low-confidence predictions are flagged for review.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.model_state = state
    app.add_middleware(ObserveMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    def v2_path(request: Request) -> bool:
        return request.url.path.startswith("/v2")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        if v2_path(request):
            summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
            return _json({"error": summary, "detail": errors}, 400)
        return _json({"detail": errors}, 422)

    @app.exception_handler(v2.V2Error)
    async def v2_error(_: Request, exc: v2.V2Error) -> Response:
        return _json({"error": exc.message}, exc.status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return _json({"error": exc.detail} if v2_path(request) else {"detail": exc.detail}, 413)

    def current_or_none() -> Models | None:
        return state.models

    # -- operations ----------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="A verified model is loaded",
        responses={503: {"model": Problem, "description": "No model yet; the reason says why"}},
    )
    async def readyz() -> Response:
        models = current_or_none()
        if models is None:
            return _json({"ready": False, "reason": state.reason}, 503)
        return _json(
            {
                "ready": True,
                "version": models.latest.version,
                "candidate_version": models.candidate.version if models.candidate else None,
                "candidate_mode": settings.candidate_mode,
                "last_reload_error": state.last_error,
            }
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the /v1 API ---------------------------------------------------------------------------

    def not_ready() -> Response:
        return _json({"detail": f"no model is loaded: {state.reason}"}, 503)

    @app.get(
        "/v1/model",
        tags=["v1"],
        response_model=ModelInfo,
        summary="The loaded model's metadata",
        responses={503: {"model": Problem}},
    )
    async def model_info() -> Response:
        if current_or_none() is None:
            return not_ready()
        return _json(state.describe())

    @app.post(
        "/v1/classify",
        tags=["v1"],
        response_model=ClassifyResponse,
        summary="Classify one or many purchase records (order and ids are kept)",
        responses={
            413: {"model": Problem, "description": "Too many records or too large a body"},
            415: {"model": Problem, "description": "Body is not application/json"},
            503: {"model": Problem, "description": "No model loaded yet"},
        },
    )
    async def classify(body: ClassifyRequest) -> Response:
        records = body.records
        if len(records) > settings.max_request_records:
            return _json(
                {
                    "detail": f"{len(records)} records exceed the limit of {settings.max_request_records} "
                    "per request (ML_MAX_REQUEST_RECORDS)"
                },
                413,
            )
        models = current_or_none()
        if models is None:
            return not_ready()
        columns = Columns()
        for r in records:
            columns.add(r.description, r.cost, r.contract, r.department)
        result = await answer(batcher, settings, models, columns, [r.id for r in records])
        results = [
            {
                "id": record.id,
                "category": result.category[i],
                "confidence": result.confidence[i],
                "needs_review": result.needs_review[i],
                "alternatives": [
                    {"category": c, "probability": p}
                    for c, p in zip(result.top_categories[i], result.top_probabilities[i], strict=True)
                ],
                "model_version": result.model_version[i],
            }
            for i, record in enumerate(records)
        ]
        return _json({"model_version": models.latest.version, "results": results})

    # -- the Open Inference Protocol (V2) ------------------------------------------------------

    v2_errors: dict[int | str, dict[str, Any]] = {
        400: {"model": v2.ErrorResponse},
        404: {"model": v2.ErrorResponse},
    }

    def v2_model(name: str, version: str | None = None) -> Models:
        """The models serving ``name``; a version given must be LATEST's (the candidate is not
        addressable: it answers only the records the canary share gives it)."""
        if name != settings.model_name:
            raise v2.V2Error(f"unknown model '{name}'; this server serves '{settings.model_name}'", 404)
        models = current_or_none()
        if models is None:
            raise v2.V2Error(f"model '{name}' is not ready: {state.reason}", 503)
        if version is not None and version != models.latest.version:
            raise v2.V2Error(f"model '{name}' version '{version}' is not loaded (serving {models.latest.version})", 404)
        return models

    @app.get("/v2", tags=["v2"], response_model=v2.ServerMetadata, summary="V2 server metadata")
    async def v2_server() -> dict[str, Any]:
        return {"name": "purchase-classifier", "version": "1", "extensions": []}

    @app.get("/v2/health/live", tags=["v2"], summary="V2 server liveness")
    async def v2_live() -> dict[str, bool]:
        return {"live": True}

    @app.get(
        "/v2/health/ready",
        tags=["v2"],
        summary="V2 server readiness (400 when not ready)",
        responses={400: {"model": v2.ErrorResponse}},
    )
    async def v2_ready() -> Response:
        if current_or_none() is None:
            return _json({"ready": False, "error": state.reason}, 400)
        return _json({"ready": True})

    async def model_ready(name: str, version: str | None = None) -> Response:
        try:
            v2_model(name, version)
        except v2.V2Error as exc:
            status = 400 if exc.status == 503 else exc.status
            return _json({"ready": False, "error": exc.message}, status)
        return _json({"name": name, "ready": True})

    @app.get("/v2/models/{name}/ready", tags=["v2"], summary="V2 model readiness", responses=v2_errors)
    async def v2_model_ready(name: str) -> Response:
        return await model_ready(name)

    @app.get(
        "/v2/models/{name}/versions/{version}/ready",
        tags=["v2"],
        summary="V2 model version readiness",
        responses=v2_errors,
    )
    async def v2_version_ready(name: str, version: str) -> Response:
        return await model_ready(name, version)

    @app.get(
        "/v2/models/{name}",
        tags=["v2"],
        response_model=v2.ModelMetadata,
        summary="V2 model metadata",
        responses=v2_errors,
    )
    async def v2_metadata(name: str) -> Response:
        models = v2_model(name)
        return _json(v2.model_metadata(name, models.latest.version, settings.top_k).model_dump())

    @app.get(
        "/v2/models/{name}/versions/{version}",
        tags=["v2"],
        response_model=v2.ModelMetadata,
        summary="V2 model version metadata",
        responses=v2_errors,
    )
    async def v2_version_metadata(name: str, version: str) -> Response:
        models = v2_model(name, version)
        return _json(v2.model_metadata(name, models.latest.version, settings.top_k).model_dump())

    async def infer(name: str, version: str | None, http: Request) -> Response:
        request = v2.parse(await http.body(), http.headers.get(v2.HEADER_LENGTH))
        columns, ids = v2.decode(request, settings.max_request_records)
        v2.check_outputs(request)
        models = v2_model(name, version)
        result = await answer(batcher, settings, models, columns, ids)
        body, header_length = v2.encode(request, result, name, models.latest.version)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream", headers={v2.HEADER_LENGTH: str(header_length)})

    infer_responses: dict[int | str, dict[str, Any]] = {
        **v2_errors,
        413: {"model": v2.ErrorResponse},
        503: {"model": v2.ErrorResponse},
    }
    # The body is read by v2.parse (JSON, or JSON then binary tensor data), so it is declared here.
    infer_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
        }
    }

    @app.post(
        "/v2/models/{name}/infer",
        tags=["v2"],
        response_model=v2.InferenceResponse,
        summary="V2 inference",
        responses=infer_responses,
        openapi_extra=infer_body,
    )
    async def v2_infer(name: str, request: Request) -> Response:
        return await infer(name, None, request)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=["v2"],
        response_model=v2.InferenceResponse,
        summary="V2 inference on a given version",
        responses=infer_responses,
        openapi_extra=infer_body,
    )
    async def v2_version_infer(name: str, version: str, request: Request) -> Response:
        return await infer(name, version, request)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the V2 request body's (no handler parameter declares it)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            request_schema = v2.InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request_schema.pop("$defs", {}))
            components["InferenceRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
