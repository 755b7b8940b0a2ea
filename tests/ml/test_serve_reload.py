"""Hot reload against a real server process: startup without a model, a swap under concurrent load
with no failed request, and a corrupt new version that is refused while the old one keeps serving."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml.registry import ARTIFACT, ModelRegistry
from tests.ml import serve_fixtures
from tests.ml.serve_fixtures import MODEL, save_model, start_server

tiny_data = serve_fixtures.tiny_data
tiny_pipeline = serve_fixtures.tiny_pipeline

pytestmark = pytest.mark.slow

RECORD = {"records": [{"id": "x", "description": "SUT SILK 3-0 SA74H", "cost": 12.0}]}


def test_starts_without_a_model_and_becomes_ready_when_latest_appears(tmp_path: Path, tiny_pipeline: Any) -> None:
    store = tmp_path / "store"
    server = start_server(store, tmp_path / "server.log", "--reload-interval-s", "0.2")
    try:
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "no LATEST" in ready.json()["reason"] and str(tmp_path) not in ready.text
            assert str(tmp_path) not in client.get(f"/v2/models/{MODEL}/ready").text
            classify = client.post("/v1/classify", json=RECORD)
            assert classify.status_code == 503 and "no model" in classify.json()["detail"]
            assert client.get("/v1/model").status_code == 503
            assert client.get("/v2/health/ready").status_code == 400
            assert client.get(f"/v2/models/{MODEL}/ready").status_code == 400

            version = save_model(store, tiny_pipeline)
            assert server.wait("/readyz").json()["version"] == version
            classify = client.post("/v1/classify", json=RECORD)
            assert classify.status_code == 200 and classify.json()["model_version"] == version
    finally:
        server.stop()


def corrupt(store: Path, version: str) -> None:
    artifact = store / "models" / MODEL / version / ARTIFACT
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) // 2])


def test_hot_reload_under_load_then_a_corrupt_version_is_ignored(tmp_path: Path, tiny_pipeline: Any) -> None:
    store = tmp_path / "store"
    first = save_model(store, tiny_pipeline)
    server = start_server(store, tmp_path / "server.log", "--reload-interval-s", "0.2")
    try:
        server.wait("/readyz")
        seen: Counter[str] = Counter()
        failures: list[str] = []
        stop = threading.Event()
        second_seen = threading.Event()
        second: list[str] = []

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/v1/classify", json=RECORD)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                        continue
                    version = response.json()["model_version"]
                    seen[version] += 1
                    if second and version == second[0] and seen[version] >= 20:
                        second_seen.set()

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            while seen[first] < 20 and not failures:  # load is flowing on the first version
                stop.wait(0.05)
            second.append(save_model(store, tiny_pipeline))
            assert second_seen.wait(60), f"never served {second[0]}; seen {dict(seen)}"
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert failures == []
        assert seen[first] >= 20 and seen[second[0]] >= 20
        assert set(seen) == {first, second[0]}

        bad = save_model(store, tiny_pipeline, promote=False)
        corrupt(store, bad)
        (store / "models" / MODEL / "LATEST").write_text(bad)  # as a planted store would: promote refuses it
        with server.client() as client:
            for _ in range(600):
                if 'model_reloads_total{result="failure",role="latest"} 1.0' in client.get("/metrics").text:
                    break
                stop.wait(0.1)
            metrics = client.get("/metrics").text
            assert 'purchase_classifier_serve_model_reloads_total{result="failure",role="latest"} 1.0' in metrics
            assert 'purchase_classifier_serve_model_reloads_total{result="success",role="latest"} 2.0' in metrics
            ready = client.get("/readyz").json()
            assert ready["version"] == second[0]
            assert bad in ready["last_reload_error"] and "corrupt" in ready["last_reload_error"]
            assert str(tmp_path) not in ready["last_reload_error"]  # no store path for clients
            response = client.post("/v1/classify", json=RECORD)
            assert response.status_code == 200 and response.json()["model_version"] == second[0]

            ModelRegistry(str(store), MODEL).promote(second[0])  # the operator points LATEST back
            for _ in range(600):
                if client.get("/readyz").json()["last_reload_error"] is None:
                    break
                stop.wait(0.1)
            assert client.get("/readyz").json()["last_reload_error"] is None  # the failure is over
        log = server.log.read_text()
        assert "refused" in log and "corrupt or truncated" in log  # the log has the exception text
    finally:
        server.stop()
