"""The FastAPI application: the ``/v1`` API, the V2 protocol, health, readiness and metrics.

Handlers do only what each request needs: validate, take the current model reference, queue the
records for the micro-batcher, and write the JSON answer directly (no response-model round trip;
the models still document the schema in OpenAPI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ml.registry import LoadedModel
from ml.serve import v2
from ml.serve.batching import MicroBatcher
from ml.serve.inference import Columns
from ml.serve.metrics import ServeMetrics
from ml.serve.schemas import ClassifyRequest, ClassifyResponse, ModelInfo, Problem
from ml.serve.settings import ServeSettings
from ml.serve.state import ModelState

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status, media_type="application/json")


class ObserveMiddleware:
    """Latency and status per route template (bounded label values), and the JSON-only rule.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs far more per request.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["method"] == "POST" and not _is_json(scope):
                response = _json({"detail": "Content-Type must be application/json"}, 415)
                await response(scope, receive, observed_send)
            else:
                await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(template, scope["method"]).observe(time.perf_counter() - started)
            self.metrics.requests.labels(template, str(status)).inc()


def _is_json(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    return False


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
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.model_state = state
    app.add_middleware(ObserveMiddleware, metrics=metrics)

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

    def current_or_none() -> LoadedModel | None:
        return state.current

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
        model = current_or_none()
        if model is None:
            return _json({"ready": False, "reason": state.reason}, 503)
        return _json({"ready": True, "version": model.version, "last_reload_error": state.last_error})

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
        model = current_or_none()
        if model is None:
            return not_ready()
        columns = Columns()
        for r in records:
            columns.add(r.description, r.cost, r.contract, r.department)
        result = await batcher.submit(model, columns)
        version = model.version
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
                "model_version": version,
            }
            for i, record in enumerate(records)
        ]
        return _json({"model_version": version, "results": results})

    # -- the Open Inference Protocol (V2) ------------------------------------------------------

    v2_errors: dict[int | str, dict[str, Any]] = {
        400: {"model": v2.ErrorResponse},
        404: {"model": v2.ErrorResponse},
    }

    def v2_model(name: str, version: str | None = None) -> LoadedModel:
        if name != settings.model_name:
            raise v2.V2Error(f"unknown model '{name}'; this server serves '{settings.model_name}'", 404)
        model = current_or_none()
        if model is None:
            raise v2.V2Error(f"model '{name}' is not ready: {state.reason}", 503)
        if version is not None and version != model.version:
            raise v2.V2Error(f"model '{name}' version '{version}' is not loaded (serving {model.version})", 404)
        return model

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
        model = v2_model(name)
        return _json(v2.model_metadata(name, model.version, settings.top_k).model_dump())

    @app.get(
        "/v2/models/{name}/versions/{version}",
        tags=["v2"],
        response_model=v2.ModelMetadata,
        summary="V2 model version metadata",
        responses=v2_errors,
    )
    async def v2_version_metadata(name: str, version: str) -> Response:
        model = v2_model(name, version)
        return _json(v2.model_metadata(name, model.version, settings.top_k).model_dump())

    async def infer(name: str, version: str | None, request: v2.InferenceRequest) -> Response:
        columns = v2.decode(request, settings.max_request_records)
        v2.check_outputs(request)
        model = v2_model(name, version)
        result = await batcher.submit(model, columns)
        return _json(v2.encode(request, result, name, model.version))

    infer_responses: dict[int | str, dict[str, Any]] = {
        **v2_errors,
        413: {"model": v2.ErrorResponse},
        503: {"model": v2.ErrorResponse},
    }

    @app.post(
        "/v2/models/{name}/infer",
        tags=["v2"],
        response_model=v2.InferenceResponse,
        summary="V2 inference",
        responses=infer_responses,
    )
    async def v2_infer(name: str, body: v2.InferenceRequest) -> Response:
        return await infer(name, None, body)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=["v2"],
        response_model=v2.InferenceResponse,
        summary="V2 inference on a given version",
        responses=infer_responses,
    )
    async def v2_version_infer(name: str, version: str, body: v2.InferenceRequest) -> Response:
        return await infer(name, version, body)

    return app
