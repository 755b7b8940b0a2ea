"""A CANDIDATE version beside LATEST in a real server process: shadow and canary modes under
concurrent load with a candidate that disagrees, promotion and rejection with no failed request,
and a corrupt candidate that is refused while LATEST keeps serving."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ml.model import build_pipeline, predict
from ml.registry import ARTIFACT, ModelRegistry
from ml.schema import CATEGORY
from ml.serve.routing import canary_position
from tests.ml import serve_fixtures
from tests.ml.serve_fixtures import MODEL, Server, save_model, start_server

tiny_data = serve_fixtures.tiny_data
tiny_pipeline = serve_fixtures.tiny_pipeline

pytestmark = pytest.mark.slow

PREFIX = "purchase_classifier_serve"
DESCRIPTIONS = ["SUT SILK 3-0 SA74H", "GAUZE SPONGE 4X4", "GLOVE NITRILE M", "CATH FOLEY 16FR", "SYRINGE 10ML"]


@pytest.fixture(scope="module")
def contrary_pipeline(tiny_data: pd.DataFrame) -> Any:
    """Trained on the same rows with every category renamed to the next one: it always disagrees."""
    categories = sorted(tiny_data[CATEGORY].unique())
    rotate = dict(zip(categories, categories[1:] + categories[:1], strict=True))
    return build_pipeline().fit(tiny_data, tiny_data[CATEGORY].map(rotate))


def store_with_candidate(store: Path, latest: Any, candidate: Any) -> tuple[str, str]:
    first = save_model(store, latest)
    second = save_model(store, candidate, promote=False)
    ModelRegistry(str(store), MODEL).propose(second)
    return first, second


def body(ids: list[str]) -> dict[str, Any]:
    return {"records": [{"id": i, "description": DESCRIPTIONS[n % len(DESCRIPTIONS)]} for n, i in enumerate(ids)]}


def frame_of(description: str) -> pd.DataFrame:
    """The one-record frame the service builds for a record with only a description."""
    return pd.DataFrame([{"description": description, "cost": float("nan"), "contract": "", "department": ""}])


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text (0 when absent)."""
    for line in text.splitlines():
        if line.split("{")[0].split(" ")[0] == f"{PREFIX}_{name}" and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Load:
    """Threads posting ``/v1/classify`` until stopped; every non-200 answer is kept as a failure."""

    def __init__(self, server: Server, threads: int, make_ids: Callable[[int, int], list[str]]) -> None:
        self.server = server
        self.make_ids = make_ids
        self.versions: Counter[str] = Counter()
        self.answers: dict[str, set[str]] = {}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]

    def _run(self, thread: int) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                response = client.post("/v1/classify", json=body(self.make_ids(thread, n)))
                n += 1
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                    continue
                with self.lock:
                    for result in response.json()["results"]:
                        self.versions[result["model_version"]] += 1
                        self.answers.setdefault(result["id"], set()).add(result["model_version"])

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def wait(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not condition():
                if deadline.is_set() or self.failures:
                    raise AssertionError(f"waited {timeout} s; versions {dict(self.versions)}, {self.failures[:3]}")
                self.stop.wait(0.05)
        finally:
            timer.cancel()


def test_shadow_scores_every_record_with_the_candidate_and_answers_from_latest(
    tmp_path: Path, tiny_pipeline: Any, contrary_pipeline: Any
) -> None:
    store = tmp_path / "store"
    latest, candidate = store_with_candidate(store, tiny_pipeline, contrary_pipeline)
    server = start_server(store, tmp_path / "server.log", env={"ML_CANDIDATE_MODE": "shadow"})
    try:
        ready = server.wait("/readyz").json()
        assert ready["candidate_version"] == candidate and ready["candidate_mode"] == "shadow"
        info = server.client().get("/v1/model").json()
        assert (info["version"], info["candidate_version"], info["candidate_mode"]) == (latest, candidate, "shadow")
        with Load(server, 4, lambda t, n: [f"t{t}-{n}-{k}" for k in range(3)]) as load:
            load.wait(lambda: sum(load.versions.values()) >= 600)
        assert load.failures == [] and set(load.versions) == {latest}
        served = sum(load.versions.values())

        def compared(text: str) -> float:
            return sum(
                metric(text, "shadow_comparisons_total", model_version=candidate, result=result)
                for result in ("agree", "disagree")
            )

        with server.client() as client:
            response = client.post("/v1/classify", json=body(["one"]))
            for _ in range(100):  # the last batch's shadow call runs after its answers went out
                text = client.get("/metrics").text
                if compared(text) >= served + 1:
                    break
                load.stop.wait(0.05)
        expected = predict(tiny_pipeline, frame_of(DESCRIPTIONS[0]))
        assert response.json()["results"][0]["category"] == expected.category[0]
    finally:
        server.stop()
    agree = metric(text, "shadow_comparisons_total", model_version=candidate, result="agree")
    disagree = metric(text, "shadow_comparisons_total", model_version=candidate, result="disagree")
    assert agree + disagree == served + 1  # every served record was also scored by the candidate
    assert disagree > 0.9 * (agree + disagree)  # it renames every category
    for role, version in (("latest", latest), ("candidate", candidate)):
        assert metric(text, "confidence_count", model_version=version, role=role) >= served
        assert metric(text, "model_call_duration_seconds_count", model_version=version, role=role) > 0
        assert f'{PREFIX}_review_share{{model_version="{version}",role="{role}"}}' in text  # metric() says 0 if absent
        assert 0 <= metric(text, "review_share", model_version=version, role=role) <= 1
    assert metric(text, "candidate_ready") == 1
    assert f'{PREFIX}_candidate_info{{mode="shadow",version="{candidate}"}} 1.0' in text


def test_canary_splits_records_by_id_stably_and_follows_reject_and_promote(
    tmp_path: Path, tiny_pipeline: Any, contrary_pipeline: Any
) -> None:
    store = tmp_path / "store"
    latest, candidate = store_with_candidate(store, tiny_pipeline, contrary_pipeline)
    registry = ModelRegistry(str(store), MODEL)
    share = 0.3
    server = start_server(
        store,
        tmp_path / "server.log",
        "--candidate-mode",
        "canary",
        "--canary-share",
        str(share),
        "--reload-interval-s",
        "0.2",
    )
    try:
        server.wait("/readyz")
        ids = [f"purchase-{i}" for i in range(2000)]
        # four clients send the same ids in different groupings, so each id is answered several times
        with Load(server, 4, lambda t, n: [ids[(n * 7 + t * 5 + k) % len(ids)] for k in range(5)]) as load:
            load.wait(lambda: len(load.answers) == len(ids) and sum(load.versions.values()) >= 8000)
        assert load.failures == []
        assert all(len(versions) == 1 for versions in load.answers.values()), "an id got two versions"
        chosen = {i for i, versions in load.answers.items() if versions == {candidate}}
        assert chosen == {i for i in ids if canary_position(i) < share}  # the documented hash
        assert abs(len(chosen) / len(ids) - share) < 0.04

        with server.client() as client:
            answer = client.post("/v1/classify", json=body(ids[:40])).json()
            text = client.get("/metrics").text
        assert answer["model_version"] == latest
        for result in answer["results"]:
            pipeline = contrary_pipeline if result["id"] in chosen else tiny_pipeline
            assert result["model_version"] == (candidate if result["id"] in chosen else latest)
            frame = frame_of(DESCRIPTIONS[ids.index(result["id"]) % len(DESCRIPTIONS)])
            assert result["category"] == predict(pipeline, frame).category[0]
        served = {
            r: metric(text, "confidence_count", model_version=v, role=r)
            for r, v in (("latest", latest), ("candidate", candidate))
        }
        assert abs(served["candidate"] / (served["latest"] + served["candidate"]) - share) < 0.04

        # Reject, then a new candidate promoted, while clients keep sending: nothing fails.
        with Load(server, 4, lambda t, n: [ids[(n * 7 + t * 5 + k) % len(ids)] for k in range(5)]) as load:
            registry.reject_candidate()
            load.wait(lambda: server.client().get("/readyz").json()["candidate_version"] is None)
            before = load.versions[candidate]
            load.wait(lambda: load.versions[latest] >= 2000)
            assert load.versions[candidate] - before <= 20 * 4  # at most the requests already in flight
            third = save_model(store, contrary_pipeline, promote=False)
            registry.propose(third)
            load.wait(lambda: load.versions[third] >= 200)
            registry.promote_candidate()
            load.wait(lambda: server.client().get("/readyz").json()["version"] == third)
            at_promotion = load.versions[latest]
            load.wait(lambda: load.versions[third] >= 3000)
        assert load.failures == []
        assert load.versions[latest] - at_promotion <= 20 * 4
        ready = server.client().get("/readyz").json()
        assert ready["version"] == third and ready["candidate_version"] is None
    finally:
        server.stop()


def test_v2_canary_says_which_version_answered_each_record(
    tmp_path: Path, tiny_pipeline: Any, contrary_pipeline: Any
) -> None:
    store = tmp_path / "store"
    latest, candidate = store_with_candidate(store, tiny_pipeline, contrary_pipeline)
    server = start_server(store, tmp_path / "server.log", env={"ML_CANDIDATE_MODE": "canary", "ML_CANARY_SHARE": "0.5"})
    try:
        server.wait("/readyz")
        ids = [f"v2-{i}" for i in range(20)]
        request = {
            "inputs": [
                {"name": "id", "datatype": "BYTES", "shape": [20], "data": ids},
                {"name": "description", "datatype": "BYTES", "shape": [20], "data": [DESCRIPTIONS[0]] * 20},
            ]
        }
        with server.client() as client:
            response = client.post(f"/v2/models/{MODEL}/infer", json=request)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["model_version"] == [candidate if canary_position(i) < 0.5 else latest for i in ids]
    assert {latest, candidate} == set(outputs["model_version"])
    answers = dict(zip(outputs["model_version"], outputs["category"], strict=True))
    assert answers[latest] != answers[candidate]


def test_a_corrupt_candidate_is_refused_and_latest_keeps_serving(
    tmp_path: Path, tiny_pipeline: Any, contrary_pipeline: Any
) -> None:
    store = tmp_path / "store"
    latest, candidate = store_with_candidate(store, tiny_pipeline, contrary_pipeline)
    artifact = store / "models" / MODEL / candidate / ARTIFACT
    artifact.write_bytes(artifact.read_bytes()[:100])
    server = start_server(store, tmp_path / "server.log", "--candidate-mode", "canary", "--canary-share", "1")
    try:
        ready = server.wait("/readyz").json()
        with server.client() as client:
            response = client.post("/v1/classify", json=body(["a", "b", "c"]))
            text = client.get("/metrics").text
    finally:
        server.stop()
    assert ready["version"] == latest and ready["candidate_version"] is None
    assert candidate in ready["last_reload_error"] and "corrupt" in ready["last_reload_error"]
    assert response.status_code == 200
    assert {r["model_version"] for r in response.json()["results"]} == {latest}
    assert metric(text, "model_reloads_total", result="failure", role="candidate") == 1
    assert metric(text, "candidate_ready") == 0
