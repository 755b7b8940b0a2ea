"""Common HTTP and V2 clients against a real ``python -m ml serve`` process, at their defaults.

A body over ``ML_MAX_BODY_BYTES`` must reach ``urllib``, ``requests`` and ``httpx`` as a 413 (they
write the whole body before reading the answer); ``tritonclient``'s HTTP client must work with its
binary tensor data extension and with plain JSON (which it sends without a content type); and a
request shaped as MLServer's types serialise one must be accepted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as triton

from ml.model import predict
from tests.ml import serve_fixtures
from tests.ml.serve_fixtures import MODEL, Server

server = serve_fixtures.server
tiny_data = serve_fixtures.tiny_data
tiny_pipeline = serve_fixtures.tiny_pipeline

pytestmark = pytest.mark.slow

#: Twice the default ML_MAX_BODY_BYTES (4 MiB), well under the bound the server reads and discards.
LARGE = json.dumps({"records": [{"id": str(i), "description": "X" * 1000} for i in range(8000)]}).encode()
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("path", ["/v1/classify", f"/v2/models/{MODEL}/infer"])
def test_urllib_sees_the_413_for_a_body_over_the_limit(server: Server, path: str) -> None:
    request = urllib.request.Request(server.url + path, data=LARGE, headers=JSON)  # urllib says Connection: close
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 413
    body = json.loads(caught.value.read())
    assert "ML_MAX_BODY_BYTES" in (body["error"] if path.startswith("/v2") else body["detail"])


def test_requests_sees_the_413_with_a_length_and_when_chunked(server: Server) -> None:
    with requests.Session() as session:
        sized = session.post(server.url + "/v1/classify", data=LARGE, headers=JSON, timeout=60)
        chunks: Iterator[bytes] = (LARGE[i : i + 65536] for i in range(0, len(LARGE), 65536))
        chunked = session.post(server.url + "/v1/classify", data=chunks, headers=JSON, timeout=60)
        after = session.post(server.url + "/v1/classify", json={"records": [{"id": "a", "description": "SUT"}]})
    assert sized.status_code == 413 and "ML_MAX_BODY_BYTES" in sized.json()["detail"]
    assert chunked.status_code == 413 and "ML_MAX_BODY_BYTES" in chunked.json()["detail"]
    assert after.status_code == 200  # the connection pool is still usable


def test_httpx_sees_the_413_and_it_is_counted_as_one(server: Server) -> None:
    with server.client() as client:
        response = client.post("/v1/classify", content=LARGE, headers=JSON)
        metrics = client.get("/metrics").text
    assert response.status_code == 413
    assert 'purchase_classifier_serve_requests_total{route="/v1/classify",status="413"}' in metrics


def _inputs(frame: pd.DataFrame, binary: bool) -> list[triton.InferInput]:
    columns = {
        "id": ("BYTES", np.array([f"r{i}" for i in range(len(frame))], dtype=object)),
        "description": ("BYTES", frame["description"].to_numpy(dtype=object)),
        "cost": ("FP64", frame["cost"].to_numpy(dtype=np.float64)),
        "contract": ("BYTES", frame["contract"].to_numpy(dtype=object)),
        "department": ("BYTES", frame["department"].to_numpy(dtype=object)),
    }
    inputs = []
    for name, (datatype, values) in columns.items():
        tensor = triton.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.fixture
def sample(tiny_data: pd.DataFrame) -> pd.DataFrame:
    """Records with a known cost (a missing one would be NaN) and a non-ASCII description."""
    frame = tiny_data[tiny_data["cost"].notna()].head(6).reset_index(drop=True)
    frame.loc[0, "description"] = "GAZE STÉRILE 10×10 – ÉPONGE"
    return frame


def _decoded(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()]


def test_tritonclient_at_its_defaults_binary_inputs_and_outputs(
    server: Server, sample: pd.DataFrame, tiny_pipeline: Any
) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_ready() and client.is_model_ready(MODEL)
        version = client.get_model_metadata(MODEL)["versions"][0]
        result = client.infer(MODEL, _inputs(sample, binary=True))
    finally:
        client.close()
    expected = predict(tiny_pipeline, sample, top_k=3)
    assert _decoded(result.as_numpy("category")) == expected.category.tolist()
    assert result.as_numpy("confidence").tolist() == pytest.approx(expected.confidence.tolist())
    assert result.as_numpy("needs_review").tolist() == [c < 0.6 for c in expected.confidence]
    assert result.as_numpy("top_probabilities").size == len(sample) * 3
    assert _decoded(result.as_numpy("model_version")) == [version] * len(sample)
    response = result.get_response()
    assert response["model_version"] == version
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])


def test_tritonclient_json_without_content_type_and_chosen_binary_outputs(
    server: Server, sample: pd.DataFrame, tiny_pipeline: Any
) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        as_json = client.infer(
            MODEL,
            _inputs(sample, binary=False),
            outputs=[triton.InferRequestedOutput("category", binary_data=False)],
        )
        mixed = client.infer(
            MODEL,
            _inputs(sample, binary=False),
            outputs=[
                triton.InferRequestedOutput("category", binary_data=True),
                triton.InferRequestedOutput("confidence", binary_data=False),
            ],
        )
    finally:
        client.close()
    expected = predict(tiny_pipeline, sample, top_k=3)
    assert [o["name"] for o in as_json.get_response()["outputs"]] == ["category"]
    assert _decoded(as_json.as_numpy("category")) == expected.category.tolist()
    assert _decoded(mixed.as_numpy("category")) == expected.category.tolist()
    assert mixed.as_numpy("confidence").tolist() == pytest.approx(expected.confidence.tolist())
    confidence = next(o for o in mixed.get_response()["outputs"] if o["name"] == "confidence")
    assert "data" in confidence and "binary_data_size" not in (confidence.get("parameters") or {})


def test_binary_data_that_does_not_add_up_is_a_400_naming_the_input(server: Server) -> None:
    header = json.dumps(
        {"inputs": [{"name": "description", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}
    ).encode()
    element = b"\x05\x00\x00\x00GAUZE"  # one 9-byte element where the shape says two
    with server.client() as client:
        short = client.post(
            f"/v2/models/{MODEL}/infer",
            content=header + element,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        past = client.post(
            f"/v2/models/{MODEL}/infer",
            content=header + element[:6],
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert short.status_code == 400 and "'description'" in short.json()["error"]
    assert past.status_code == 400 and "binary_data_size" in past.json()["error"]


def test_a_request_as_mlserver_types_serialise_it(server: Server, sample: pd.DataFrame, tiny_pipeline: Any) -> None:
    """``PandasCodec.encode_request(df).model_dump()`` of MLServer 1.7, as its REST client posts it:
    ``[n, 1]`` columns, ``content_type`` parameters, and the unset optional fields as nulls."""
    n = len(sample)

    def column(name: str, datatype: str, values: list[Any], content_type: str | None) -> dict[str, Any]:
        parameters = {"content_type": content_type, "headers": None} if content_type else None
        return {"name": name, "shape": [n, 1], "datatype": datatype, "parameters": parameters, "data": values}

    body = {
        "id": None,
        "parameters": {"content_type": "pd", "headers": None},
        "inputs": [
            column("description", "BYTES", sample["description"].tolist(), "str"),
            column("cost", "FP64", sample["cost"].astype(float).tolist(), None),
            column("contract", "BYTES", sample["contract"].tolist(), "str"),
            column("department", "BYTES", sample["department"].tolist(), "str"),
        ],
        "outputs": None,
    }
    with server.client() as client:
        response = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["category"] == predict(tiny_pipeline, sample).category.tolist()
