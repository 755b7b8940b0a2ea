"""The Open Inference Protocol (V2) routes: decode with :mod:`ml.serve.v2`, let the data plane
check and predict, encode the answer. Errors are ``{"error": "..."}`` (see :mod:`ml.serve.http`)."""

from __future__ import annotations

import functools
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ml.serve import v2
from ml.serve.dataplane import DataPlane, ServeError
from ml.serve.http import json_response, unless_disconnected

TAGS: list[str | Enum] = ["v2"]


def add_routes(app: FastAPI, plane: DataPlane) -> None:
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": v2.ErrorResponse},
        404: {"model": v2.ErrorResponse},
    }

    @app.get("/v2", tags=TAGS, response_model=v2.ServerMetadata, summary="V2 server metadata")
    async def v2_server() -> dict[str, Any]:
        return {"name": "purchase-classifier", "version": "1", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live", tags=TAGS, summary="V2 server liveness")
    async def v2_live() -> dict[str, bool]:
        return {"live": True}

    @app.get(
        "/v2/health/ready", tags=TAGS, summary="V2 server readiness (400 when not ready)", responses={400: errors[400]}
    )
    async def v2_ready() -> Response:
        ready(None, None)
        return json_response({"ready": True})

    def ready(name: str | None, version: str | None) -> None:
        """Not ready is a 400 in the protocol (not the 503 of inference)."""
        try:
            plane.models(name, version)
        except ServeError as exc:
            if exc.status == 503:
                raise ServeError(exc.message, 400) from None
            raise

    @app.get("/v2/models/{name}/ready", tags=TAGS, summary="V2 model readiness", responses=errors)
    async def v2_model_ready(name: str) -> Response:
        ready(name, None)
        return json_response({"name": name, "ready": True})

    @app.get(
        "/v2/models/{name}/versions/{version}/ready", tags=TAGS, summary="V2 model version readiness", responses=errors
    )
    async def v2_version_ready(name: str, version: str) -> Response:
        ready(name, version)
        return json_response({"name": name, "ready": True})

    def metadata(name: str, version: str | None) -> Response:
        models = plane.models(name, version)
        return json_response(v2.model_metadata(name, models.latest.version, plane.settings.top_k).model_dump())

    @app.get(
        "/v2/models/{name}", tags=TAGS, response_model=v2.ModelMetadata, summary="V2 model metadata", responses=errors
    )
    async def v2_metadata(name: str) -> Response:
        return metadata(name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}",
        tags=TAGS,
        response_model=v2.ModelMetadata,
        summary="V2 model version metadata",
        responses=errors,
    )
    async def v2_version_metadata(name: str, version: str) -> Response:
        return metadata(name, version)

    async def infer(name: str, version: str | None, http: Request) -> Response:
        plane.models(name, version)  # an unknown model is a 404 whatever the body
        request = v2.parse(await http.body(), http.headers.get(v2.HEADER_LENGTH))
        v2.check_outputs(request)
        columns, ids = v2.decode(request, plane.check_count)
        result, models = await unless_disconnected(http, plane.infer(columns, ids, name, version))
        body, header_length = v2.encode(request, result, name, models.latest.version)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream", headers={v2.HEADER_LENGTH: str(header_length)})

    infer_responses: dict[int | str, dict[str, Any]] = {
        **errors,
        413: {"model": v2.ErrorResponse},
        415: {"model": v2.ErrorResponse},
        503: {"model": v2.ErrorResponse},
    }
    # The body is read by v2.parse (JSON, or JSON then binary tensor data), so it is declared here.
    infer_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
        }
    }

    # Both inference routes are documented alike; only the path and summary differ.
    post_infer = functools.partial(
        app.post, tags=TAGS, response_model=v2.InferenceResponse, responses=infer_responses, openapi_extra=infer_body
    )

    @post_infer("/v2/models/{name}/infer", summary="V2 inference")
    async def v2_infer(name: str, request: Request) -> Response:
        return await infer(name, None, request)

    @post_infer("/v2/models/{name}/versions/{version}/infer", summary="V2 inference on a given version")
    async def v2_version_infer(name: str, version: str, request: Request) -> Response:
        return await infer(name, version, request)
