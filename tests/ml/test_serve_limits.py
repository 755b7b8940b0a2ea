"""Abuse of a real ``python -m ml serve`` process: oversized fields on both APIs, malformed V2
parameters, oversized and trickled headers, and clients that leave before their answer.

Each attack is refused in one place with a 4xx naming what was wrong, in the error body of the API
it came through (V2 ``{"error"}``, the others ``{"detail"}``).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml.serve.dataplane import MAX_TEXT_CHARS
from tests.ml import serve_fixtures
from tests.ml.serve_fixtures import MODEL, Server, save_model, start_server

server = serve_fixtures.server
tiny_data = serve_fixtures.tiny_data
tiny_pipeline = serve_fixtures.tiny_pipeline

pytestmark = pytest.mark.slow

INFER = f"/v2/models/{MODEL}/infer"
PREFIX = "purchase_classifier_serve"


def v2_body(descriptions: list[str], **extra: Any) -> dict[str, Any]:
    n = len(descriptions)
    return {"inputs": [{"name": "description", "datatype": "BYTES", "shape": [n], "data": descriptions}], **extra}


def v1_body(descriptions: list[str]) -> dict[str, Any]:
    return {"records": [{"id": str(i), "description": d} for i, d in enumerate(descriptions)]}


@pytest.mark.parametrize("size", [MAX_TEXT_CHARS + 1, 1024 * 1024])
def test_a_description_over_the_limit_is_refused_by_both_apis(server: Server, size: int) -> None:
    long = "SUT SILK " + "X" * (size - 9)
    with server.client() as client:
        v1 = client.post("/v1/classify", json=v1_body(["GAUZE", long]))
        v2 = client.post(INFER, json=v2_body(["GAUZE", long]))
    assert v1.status_code == 422, v1.text
    assert v2.status_code == 400, v2.text
    assert any(error["loc"][-2:] == [1, "description"] for error in v1.json()["detail"]), v1.text
    assert str(MAX_TEXT_CHARS) in v2.json()["error"] and "description" in v2.json()["error"]


@pytest.mark.parametrize("field", ["contract", "department"])
def test_other_text_inputs_have_the_same_limit_on_v2(server: Server, field: str) -> None:
    body = v2_body(["GAUZE"])
    body["inputs"].append({"name": field, "datatype": "BYTES", "shape": [1], "data": ["Y" * (MAX_TEXT_CHARS + 1)]})
    with server.client() as client:
        response = client.post(INFER, json=body)
    assert response.status_code == 400 and field in response.json()["error"], response.text


def test_v2_record_ids_have_the_v1_limit(server: Server) -> None:
    body = v2_body(["GAUZE"])
    body["inputs"].append({"name": "id", "datatype": "BYTES", "shape": [1], "data": ["i" * 201]})
    with server.client() as client:
        response = client.post(INFER, json=body)
    assert response.status_code == 400 and "id" in response.json()["error"], response.text


def test_two_outputs_of_one_name_are_a_400(server: Server) -> None:
    with server.client() as client:
        response = client.post(INFER, json=v2_body(["GAUZE"], outputs=[{"name": "category"}, {"name": "category"}]))
    assert response.status_code == 400 and "twice" in response.json()["error"], response.text


@pytest.mark.parametrize(
    "extra",
    [
        {"outputs": [{"name": "category", "parameters": {"binary_data": "false"}}]},
        {"outputs": [{"name": "category", "parameters": {"binary_data": 1}}]},
        {"parameters": {"binary_data_output": "false"}},
    ],
)
def test_binary_data_must_be_a_json_boolean(server: Server, extra: dict[str, Any]) -> None:
    with server.client() as client:
        response = client.post(INFER, json=v2_body(["GAUZE"], **extra))
        false = client.post(
            INFER, json=v2_body(["GAUZE"], outputs=[{"name": "category", "parameters": {"binary_data": False}}])
        )
    assert response.status_code == 400 and "true or false" in response.json()["error"], response.text
    assert false.status_code == 200 and false.json()["outputs"][0]["data"]  # false stays JSON


def raw(server: Server, data: bytes, read_timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may answer and close while we still send
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def test_headers_over_the_limit_are_a_431_and_the_connection_closes(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40))
    answer = raw(server, head + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"ML_MAX_HEADER_BYTES" in answer
    started = time.monotonic()
    huge = raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (40 * 1024 * 1024))  # 40 MB
    assert huge == b"" or huge.startswith(b"HTTP/1.1 431"), huge[:200]  # answered, or cut off mid-send
    assert time.monotonic() - started < 5  # closed at once, not after buffering 40 MB
    with server.client() as client:
        assert client.get("/healthz").status_code == 200  # the server is fine


# -- a server of its own: short header and body deadlines, the default request limits ---------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline: Any) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("strict")
    save_model(base / "store", tiny_pipeline)
    running = start_server(base / "store", base / "server.log", "--header-timeout-s", "1", "--body-timeout-s", "1")
    try:
        running.wait("/readyz")
        yield running
    finally:
        running.stop()


def trickle(server: Server, first: bytes, pieces: list[bytes]) -> tuple[bytes, float]:
    """Send ``first``, then one of ``pieces`` every 0.25 s until the server closes; the answer read
    to the end and the seconds it all took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(first)
        answer = b""
        for piece in pieces:
            time.sleep(0.25)
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer, time.monotonic() - started


def test_a_client_trickling_headers_is_cut_off(strict: Server) -> None:
    # One header line every 0.25 s, never the blank line.
    slow = [b"X-Slow-%d: 1\r\n" % i for i in range(20)]
    answer, seconds = trickle(strict, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", slow)
    assert seconds < 4  # closed at about 1 s, not after 5 s of trickling
    assert answer.startswith(b"HTTP/1.1 408") and b"ML_HEADER_TIMEOUT_S" in answer, answer
    # An idle connection that never sent a byte is closed too.
    with socket.create_connection(("127.0.0.1", int(strict.url.rsplit(":", 1)[1])), timeout=10) as sock:
        assert sock.recv(100) == b""


@pytest.mark.parametrize("path", ["/v1/classify", INFER])
def test_a_client_trickling_a_body_is_cut_off(strict: Server, path: str) -> None:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    # A byte every 0.25 s: 5 s for 20 of the 1,000 bytes promised.
    answer, seconds = trickle(strict, head.encode() + b"{", [b" "] * 20)
    assert seconds < 4  # answered and closed at about 1 s, not after 5 s
    assert answer.startswith(b"HTTP/1.1 408") and b"ML_BODY_TIMEOUT_S" in answer, answer
    assert (b'"error"' if path == INFER else b'"detail"') in answer  # each API's error shape
    with strict.client() as client:  # a body that arrives in time is served as before
        assert client.post("/v1/classify", json=v1_body(["GAUZE"])).status_code == 200


def counters(server: Server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    pattern = re.compile(rf"^{PREFIX}_(requests_total|batch_size_records_sum)(\{{.*\}})? (\S+)$", re.M)
    return {m.group(1) + (m.group(2) or ""): float(m.group(3)) for m in pattern.finditer(text)}


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_client_that_leaves_is_counted_499_and_its_rows_are_dropped(strict: Server, api: str) -> None:
    """1,000 records of 2,000-character text: seconds of model work, in calls of at most
    ML_MAX_BATCH_CHARS characters. The client leaves after 0.5 s; the rest is never predicted."""
    descriptions = [f"SUT SILK {i} " + "X" * 1980 for i in range(1000)]
    path, body = ("/v1/classify", v1_body(descriptions)) if api == "v1" else (INFER, v2_body(descriptions))
    before = counters(strict)
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=strict.url, timeout=0.5) as client:
        client.post(path, json=body)
    route = "/v1/classify" if api == "v1" else "/v2/models/{name}/infer"
    key = f'requests_total{{route="{route}",status="499"}}'
    for _ in range(100):
        after = counters(strict)
        if after.get(key, 0) > before.get(key, 0):
            break
        time.sleep(0.1)
    time.sleep(1)  # what would still be predicted for the departed client
    after = counters(strict)
    assert after.get(key, 0) == before.get(key, 0) + 1, after
    assert not any('status="500"' in k for k in after)
    predicted = after["batch_size_records_sum"] - before.get("batch_size_records_sum", 0)
    assert predicted < 500, f"{predicted} of 1,000 rows predicted after the client left"


def test_every_v2_error_is_one_shape_and_others_are_detail(server: Server, tmp_path: Path) -> None:
    ok = v2_body(["GAUZE"])
    with server.client() as client:
        v2_errors = {
            "malformed": client.post(INFER, content=b'{"inputs": [', headers={"content-type": "application/json"}),
            "schema": client.post(INFER, json={"inputs": []}),
            "value": client.post(INFER, json=v2_body(["  "])),
            "unknown model": client.post("/v2/models/other/infer", json=ok),
            "unknown version": client.post(f"/v2/models/{MODEL}/versions/nope/infer", json=ok),
            "unknown route": client.get("/v2/nothing/here"),
            "method": client.get(INFER),
            "records": client.post(INFER, json=v2_body(["GAUZE"] * 51)),
            "body": client.post(INFER, content=b"[" + b" " * (5 * 1024 * 1024) + b"]"),
            "content type": client.post(INFER, content=b"x", headers={"content-type": "text/plain"}),
            "binary header": client.post(INFER, content=b"{}", headers={"Inference-Header-Content-Length": "x"}),
            "model not ready name": client.get("/v2/models/other/ready"),
        }
        v1_errors = {
            "value": client.post("/v1/classify", json=v1_body(["  "])),
            "records": client.post("/v1/classify", json=v1_body(["GAUZE"] * 51)),
            "content type": client.post("/v1/classify", content=b"x", headers={"content-type": "text/plain"}),
            "unknown route": client.get("/v1/nothing"),
            "method": client.get("/v1/classify"),
        }
    for what, response in v2_errors.items():
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], (what, body)
    for what, response in v1_errors.items():
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
        assert set(response.json()) == {"detail"}, (what, response.text)
    assert v2_errors["content type"].status_code == 415 and v1_errors["content type"].status_code == 415
    assert v2_errors["body"].status_code == 413 and v2_errors["records"].status_code == 413
    for response in [*v2_errors.values(), *v1_errors.values()]:
        assert "Traceback" not in response.text and "/tmp" not in response.text


def test_docs_pages_use_only_local_assets(server: Server) -> None:
    with server.client() as client:
        pages = {path: client.get(path) for path in ("/docs", "/redoc")}
        for path, page in pages.items():
            assert page.status_code == 200, path
            urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""", page.text)
            found = [u for pair in urls for u in pair if u]
            assert found, page.text
            assert not re.search(r"https?://", page.text.replace("http://www.w3.org", "")), page.text
            for url in found:
                assert url.startswith("/"), (path, url)
                asset = client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 100, url
        assert json.loads(client.get("/openapi.json").text)["paths"]
