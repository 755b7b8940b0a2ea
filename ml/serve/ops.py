"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from enum import Enum

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ml.serve.dataplane import DataPlane
from ml.serve.http import json_response
from ml.serve.metrics import ServeMetrics
from ml.serve.schemas import Problem

TAGS: list[str | Enum] = ["operations"]


def add_routes(app: FastAPI, plane: DataPlane, metrics: ServeMetrics) -> None:

    @app.get("/healthz", tags=TAGS, summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        tags=TAGS,
        summary="A verified model is loaded",
        responses={503: {"model": Problem, "description": "No model yet; the reason says why"}},
    )
    async def readyz() -> Response:
        readiness = plane.readiness()
        return json_response(readiness, 200 if readiness["ready"] else 503)

    @app.get("/metrics", tags=TAGS, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
