"""The REST API of a real ``python -m ml serve`` process: /v1, the V2 protocol, health and metrics."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from ml.model import predict
from ml.schema import RECORD_COLUMNS
from tests.ml import serve_fixtures
from tests.ml.serve_fixtures import MODEL, Server

# The shared fixtures (another engineer owns conftest.py).
server = serve_fixtures.server
tiny_data = serve_fixtures.tiny_data
tiny_pipeline = serve_fixtures.tiny_pipeline

pytestmark = pytest.mark.slow


def records(frame: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in frame[RECORD_COLUMNS].head(n).to_dict("records"):
        cost = row["cost"]
        out.append({**{str(k): v for k, v in row.items()}, "cost": None if pd.isna(cost) else float(cost)})
    return out


def test_classify_keeps_order_and_ids_and_matches_in_process_predict(
    server: Server, tiny_data: pd.DataFrame, tiny_pipeline: Any
) -> None:
    sample = tiny_data.sample(n=12, random_state=1).reset_index(drop=True)
    body = records(sample, 12)
    for i, record in enumerate(body):
        record["id"] = f"r{11 - i}"  # ids deliberately out of sort order
    with server.client() as client:
        version = client.get("/v1/model").json()["version"]
        response = client.post("/v1/classify", json={"records": body})
    assert response.status_code == 200, response.text
    payload = response.json()
    results = payload["results"]
    assert [r["id"] for r in results] == [r["id"] for r in body]
    assert payload["model_version"] == version
    expected = predict(tiny_pipeline, sample, top_k=3)
    assert [r["category"] for r in results] == expected.category.tolist()
    for result, confidence in zip(results, expected.confidence, strict=True):
        assert result["confidence"] == pytest.approx(confidence)
        assert result["needs_review"] == (result["confidence"] < 0.6)
        assert result["model_version"] == version
        probabilities = [a["probability"] for a in result["alternatives"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert result["alternatives"][0]["category"] == result["category"]


def test_optional_fields_may_be_missing_or_null(server: Server) -> None:
    body = {
        "records": [
            {"id": "a", "description": "SUT SILK 3-0"},
            {"id": "b", "description": "GAUZE", "cost": None, "contract": None},
        ]
    }
    with server.client() as client:
        response = client.post("/v1/classify", json=body)
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["results"]] == ["a", "b"]


def test_model_metadata(server: Server, tiny_pipeline: Any) -> None:
    with server.client() as client:
        info = client.get("/v1/model").json()
    assert info["name"] == MODEL
    assert info["metrics"]["macro_f1"] == 0.9
    assert info["training_snapshot"] == "tests"
    assert len(info["sha256"]) == 64
    assert "image_digest" in info
    assert info["classes"] == [str(c) for c in tiny_pipeline.classes_]


def test_health_readiness_openapi(server: Server) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        schema = client.get("/openapi.json").json()
    for path in ("/v1/classify", "/v1/model", "/v2/models/{name}/infer", "/readyz", "/metrics"):
        assert path in schema["paths"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"records": [{"id": "a"}]}, 422, "description"),
        ({"records": [{"id": "a", "description": "   "}]}, 422, "description"),
        ({"records": [{"id": "a", "description": "X", "cost": -1}]}, 422, "cost"),
        ({"records": [{"id": "a", "description": "X", "cost": "12"}]}, 422, "cost"),
        ({"records": [{"id": "a", "description": 5}]}, 422, "description"),
        ({"records": [{"id": 7, "description": "X"}]}, 422, "id"),
        ({"records": [{"id": "a", "description": "X", "colour": "red"}]}, 422, "colour"),
        ({"records": []}, 422, "records"),
        ({"record": []}, 422, "records"),
        ([1, 2], 422, None),
        ({"records": [{"id": str(i), "description": "X"} for i in range(51)]}, 413, None),
    ],
)
def test_bad_input_is_4xx_with_the_field_named(server: Server, body: Any, status: int, field: str | None) -> None:
    with server.client() as client:
        response = client.post("/v1/classify", json=body)
    assert response.status_code == status, response.text
    if field:
        assert any(field in map(str, error["loc"]) for error in response.json()["detail"]), response.text


def test_malformed_json_wrong_content_type_and_huge_numbers(server: Server) -> None:
    with server.client() as client:
        malformed = client.post("/v1/classify", content=b'{"records": [', headers={"content-type": "application/json"})
        text = client.post("/v1/classify", content=b"description=x", headers={"content-type": "text/plain"})
        missing = client.post("/v1/classify", content=b"{}")
        infinite = client.post(
            "/v1/classify",
            content=b'{"records": [{"id": "a", "description": "X", "cost": 1e999}]}',
            headers={"content-type": "application/json"},
        )
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    assert text.status_code == 415
    assert missing.status_code == 415
    assert infinite.status_code == 422


def v2_request(frame: pd.DataFrame) -> dict[str, Any]:
    """What a V2 client sends with MLServer's pandas codec: one tensor per column, [n, 1] shapes."""
    n = len(frame)
    return {
        "id": "req-1",
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "description", "datatype": "BYTES", "shape": [n, 1], "data": [[d] for d in frame["description"]]},
            {"name": "cost", "datatype": "FP64", "shape": [n, 1], "data": [[float(c)] for c in frame["cost"]]},
            {"name": "contract", "datatype": "BYTES", "shape": [n], "data": list(frame["contract"])},
            {"name": "department", "datatype": "BYTES", "shape": [n], "data": list(frame["department"])},
        ],
    }


def test_v2_protocol(server: Server, tiny_data: pd.DataFrame, tiny_pipeline: Any) -> None:
    sample = tiny_data[tiny_data["cost"].notna()].head(5).reset_index(drop=True)
    with server.client() as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200
        metadata = client.get(f"/v2/models/{MODEL}").json()
        version = metadata["versions"][0]
        assert {t["name"] for t in metadata["inputs"]} >= {"description", "cost"}
        assert client.get(f"/v2/models/{MODEL}/versions/{version}").status_code == 200
        response = client.post(f"/v2/models/{MODEL}/infer", json=v2_request(sample))
        only = client.post(
            f"/v2/models/{MODEL}/versions/{version}/infer",
            json={**v2_request(sample), "outputs": [{"name": "category"}]},
        )
        assert client.get("/v2/models/other/ready").status_code == 404
        assert client.post("/v2/models/other/infer", json=v2_request(sample)).status_code == 404
        wrong_version = client.post(f"/v2/models/{MODEL}/versions/nope/infer", json=v2_request(sample))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL and body["model_version"] == version and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    expected = predict(tiny_pipeline, sample, top_k=3)
    assert outputs["category"]["datatype"] == "BYTES" and outputs["category"]["shape"] == [5]
    assert outputs["category"]["data"] == expected.category.tolist()
    assert outputs["confidence"]["data"] == pytest.approx(expected.confidence.tolist())
    assert outputs["top_categories"]["shape"] == [5, 3]
    assert len(outputs["top_probabilities"]["data"]) == 15
    assert outputs["needs_review"]["datatype"] == "BOOL"
    assert [o["name"] for o in only.json()["outputs"]] == ["category"]
    assert wrong_version.status_code == 404 and "error" in wrong_version.json()


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda r: r["inputs"].pop(0), 400),  # no description
        (lambda r: r["inputs"][1].update(datatype="BYTES"), 400),  # cost as text
        (lambda r: r["inputs"][1].update(data=[[-1.0]] * 2), 400),  # negative cost
        (lambda r: r["inputs"][0].update(shape=[3, 1]), 400),  # shape does not match data
        (lambda r: r["inputs"][0].update(datatype="TEXT"), 400),  # not a V2 datatype
        (lambda r: r["inputs"].append({"name": "colour", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}), 400),
        (lambda r: r.update(outputs=[{"name": "nope"}]), 400),
        (lambda r: r["inputs"][0].update(shape=[10_000], data=["x"] * 10_000), 413),
    ],
)
def test_v2_bad_requests_are_4xx_with_an_error(
    server: Server, tiny_data: pd.DataFrame, mutate: Any, status: int
) -> None:
    request = v2_request(tiny_data[tiny_data["cost"].notna()].head(2))
    mutate(request)
    with server.client() as client:
        response = client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_metrics_for_operations_and_drift(server: Server) -> None:
    with server.client() as client:
        client.post("/v1/classify", json={"records": [{"id": "m", "description": "SUT SILK 3-0 SA74H"}]})
        text = client.get("/metrics").text
    prefix = "purchase_classifier_serve"
    for name in (
        "request_duration_seconds_bucket",
        "requests_total",
        "batch_size_records_bucket",
        "model_call_duration_seconds_bucket",
        "predictions_total",
        "confidence_bucket",
        "review_flagged_total",
        "review_share",
        "model_info",
        "model_ready",
        "model_reloads_total",
    ):
        assert f"{prefix}_{name}" in text, name
    assert f'{prefix}_requests_total{{route="/v1/classify",status="200"}}' in text
    assert f'{prefix}_model_reloads_total{{result="success",role="latest"}} 1.0' in text
