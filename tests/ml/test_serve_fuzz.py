"""Fuzz the whole published OpenAPI schema of a live server: no input may produce a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.ml import serve_fixtures
from tests.ml.serve_fixtures import Server

server = serve_fixtures.server
tiny_data = serve_fixtures.tiny_data
tiny_pipeline = serve_fixtures.tiny_pipeline


@pytest.fixture(scope="module")
def api_schema(server: Server) -> Iterator[Any]:
    yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_produces_a_server_error(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])
