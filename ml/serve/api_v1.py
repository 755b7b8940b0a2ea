"""The ``/v1`` API: decode :class:`~ml.serve.schemas.ClassifyRequest` into columns, let the data
plane check and predict them, write the results (directly as JSON: no response-model round trip;
the models still document the schema in OpenAPI)."""

from __future__ import annotations

from enum import Enum

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ml.serve.dataplane import DataPlane
from ml.serve.http import json_response, unless_disconnected
from ml.serve.inference import Columns
from ml.serve.schemas import ClassifyRequest, ClassifyResponse, ModelInfo, Problem

TAGS: list[str | Enum] = ["v1"]


def add_routes(app: FastAPI, plane: DataPlane) -> None:

    @app.get(
        "/v1/model",
        tags=TAGS,
        response_model=ModelInfo,
        summary="The loaded model's metadata",
        responses={503: {"model": Problem}},
    )
    async def model_info() -> Response:
        return json_response(plane.describe())

    @app.post(
        "/v1/classify",
        tags=TAGS,
        response_model=ClassifyResponse,
        summary="Classify one or many purchase records (order and ids are kept)",
        responses={
            413: {"model": Problem, "description": "Too many records or too large a body"},
            415: {"model": Problem, "description": "Body is not application/json"},
            422: {"model": Problem, "description": "A value breaks the schema or a limit; loc names it"},
            503: {"model": Problem, "description": "No model loaded yet"},
        },
    )
    async def classify(body: ClassifyRequest, request: Request) -> Response:
        records = body.records
        plane.check_count(len(records))
        columns = Columns()
        for r in records:
            columns.add(r.description, r.cost, r.contract, r.department)
        ids = [r.id for r in records]
        result, models = await unless_disconnected(request, plane.infer(columns, ids))
        results = [
            {
                "id": record_id,
                "category": result.category[i],
                "confidence": result.confidence[i],
                "needs_review": result.needs_review[i],
                "alternatives": [
                    {"category": c, "probability": p}
                    for c, p in zip(result.top_categories[i], result.top_probabilities[i], strict=True)
                ],
                "model_version": result.model_version[i],
            }
            for i, record_id in enumerate(ids)
        ]
        return json_response({"model_version": models.latest.version, "results": results})
