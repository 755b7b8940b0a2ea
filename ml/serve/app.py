"""The FastAPI application: wiring only.

Three thin HTTP modules (:mod:`.ops`, :mod:`.api_v1`, :mod:`.api_v2`) over one
:class:`~ml.serve.dataplane.DataPlane` that owns validation, limits and the model call, as MLServer's
``rest/endpoints.py`` sit over its ``handlers/dataplane.py``; :mod:`.http` holds the request rules
and each API's error body. Swagger UI (``/docs``) and ReDoc (``/redoc``) are served from the assets
``fastapi-offline`` ships, so they work without a CDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ml.serve import api_v1, api_v2, ops, v2
from ml.serve.batching import MicroBatcher
from ml.serve.dataplane import DataPlane, ServeError
from ml.serve.http import CLIENT_CLOSED, ClientDisconnected, ObserveMiddleware, error_response, is_v2, json_response
from ml.serve.metrics import ServeMetrics
from ml.serve.settings import ServeSettings
from ml.serve.state import ModelState

log = logging.getLogger(__name__)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """Build the service; the model loads in the background once the app starts."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    state = ModelState(settings, metrics)
    batcher = MicroBatcher(settings, metrics)
    plane = DataPlane(settings, state, batcher)

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

    app = FastAPIOffline(
        title="purchase-classifier",
        summary="Classify hospital purchase lines; low-confidence predictions are flagged for review.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.model_state = state
    app.state.dataplane = plane
    app.add_middleware(
        ObserveMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    ops.add_routes(app, plane, metrics)
    api_v1.add_routes(app, plane)
    api_v2.add_routes(app, plane)

    # -- each API's error body, for every way a request can fail ---------------------------------

    @app.exception_handler(ServeError)
    async def refused(request: Request, exc: ServeError) -> Response:
        path = request.url.path
        if is_v2(path):
            return json_response({"error": exc.message}, 400 if exc.status == 422 else exc.status)
        if exc.status == 422 and exc.field is not None:
            loc = ["body", "records", exc.record, exc.field]
            return json_response({"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]}, 422)
        return error_response(path, exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        if is_v2(request.url.path):
            summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
            return json_response({"error": summary}, 400)
        return json_response({"detail": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """413 for a body over the limit, 404 and 405 for unknown routes and methods."""
        return error_response(request.url.path, exc.status_code, str(exc.detail))

    @app.exception_handler(ClientDisconnected)
    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, __: Exception) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it: the status is for the metrics

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request.url.path, 500, "internal error (the service log has the details)")

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
