"""In-process pieces of the service: settings precedence, the micro-batcher's grouping, and which
version answers each record in each candidate mode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml.cli import build_parser
from ml.errors import BadInputError
from ml.model import predict
from ml.registry import ARTIFACT, LoadedModel
from ml.serve.batching import MicroBatcher
from ml.serve.cli import settings_from_args
from ml.serve.inference import Columns
from ml.serve.metrics import ServeMetrics
from ml.serve.routing import answer, canary_position
from ml.serve.settings import ServeSettings
from ml.serve.state import Models, ModelState
from tests.ml import serve_fixtures
from tests.ml.serve_fixtures import MODEL, save_model

tiny_data = serve_fixtures.tiny_data
tiny_pipeline = serve_fixtures.tiny_pipeline


def test_settings_come_from_ml_env_vars_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_STORE", "s3://bucket/models")
    monkeypatch.setenv("ML_MODEL_NAME", "other")
    monkeypatch.setenv("ML_REVIEW_THRESHOLD", "0.7")
    monkeypatch.setenv("ML_BATCH_WINDOW_MS", "5")
    monkeypatch.setenv("ML_IMAGE_DIGEST", "sha256:" + "a" * 64)
    args = build_parser().parse_args(["serve", "--port", "9000", "--model", "flagged", "--max-batch-records", "64"])
    settings = settings_from_args(args)
    assert settings.store == "s3://bucket/models"
    assert settings.model_name == "flagged"
    assert settings.port == 9000
    assert settings.review_threshold == 0.7
    assert settings.batch_window_ms == 5
    assert settings.max_batch_records == 64
    assert settings.image_digest == "sha256:" + "a" * 64
    assert args.func.__module__ == "ml.serve.cli"


def test_an_invalid_setting_is_bad_input_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_REVIEW_THRESHOLD", "1.5")
    with pytest.raises(BadInputError, match="review_threshold"):
        settings_from_args(build_parser().parse_args(["serve"]))


def columns(frame: pd.DataFrame) -> Columns:
    out = Columns()
    for row in frame.to_dict("records"):
        out.add(row["description"], None if pd.isna(row["cost"]) else row["cost"], row["contract"], row["department"])
    return out


def test_concurrent_requests_share_model_calls_and_keep_their_rows(tiny_data: pd.DataFrame, tiny_pipeline: Any) -> None:
    model = LoadedModel("v1", tiny_pipeline, {})
    parts = [tiny_data.iloc[i * 3 : i * 3 + 3].reset_index(drop=True) for i in range(8)]
    metrics = ServeMetrics()

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(ServeSettings(batch_window_ms=50), metrics)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(model, columns(part)) for part in parts))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    for part, result in zip(parts, results, strict=True):
        expected = predict(tiny_pipeline, part)
        assert result.category == expected.category.tolist()
        assert result.confidence == pytest.approx(expected.confidence.tolist())
    calls = metrics.registry.get_sample_value("purchase_classifier_serve_batch_size_records_count")
    records = metrics.registry.get_sample_value("purchase_classifier_serve_batch_size_records_sum")
    assert records == 24
    assert calls is not None and calls < 8  # grouped: fewer model calls than requests


def test_a_batch_never_exceeds_max_batch_records(tiny_data: pd.DataFrame, tiny_pipeline: Any) -> None:
    model = LoadedModel("v1", tiny_pipeline, {})
    metrics = ServeMetrics()

    async def scenario() -> None:
        batcher = MicroBatcher(ServeSettings(max_batch_records=5), metrics)
        batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(model, columns(tiny_data.iloc[i : i + 2])) for i in range(10)))
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    buckets = {
        sample.labels["le"]: sample.value
        for metric in metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "purchase_classifier_serve_batch_size_records_bucket"
    }
    assert buckets["4.0"] == buckets["+Inf"]  # every call held at most 4 rows (two 2-row requests)


def test_versions_in_one_batch_each_use_their_own_model(tiny_data: pd.DataFrame, tiny_pipeline: Any) -> None:
    old, new = LoadedModel("old", tiny_pipeline, {}), LoadedModel("new", tiny_pipeline, {})
    calls: list[str] = []

    class Spy(MicroBatcher):
        def _call(self, model: LoadedModel, role: str, parts: list[Columns], count_batch: bool = True) -> Any:
            calls.append(model.version)
            return super()._call(model, role, parts, count_batch)

    async def scenario() -> None:
        batcher = Spy(ServeSettings(), ServeMetrics())
        batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(m, columns(tiny_data.iloc[:1])) for m in (old, new, old, new)))
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert sorted(calls) == ["new", "old"]


def test_canary_positions_are_stable_and_spread_evenly() -> None:
    ids = [f"purchase-{i}" for i in range(20_000)]
    positions = [canary_position(i) for i in ids]
    assert positions == [canary_position(i) for i in ids]
    assert all(0 <= p < 1 for p in positions)
    for share in (0.05, 0.3, 0.5):
        assert abs(sum(p < share for p in positions) / len(ids) - share) < 0.01


@pytest.mark.parametrize("mode", ["off", "shadow", "canary"])
def test_answer_gives_each_record_the_version_its_mode_says(
    tiny_data: pd.DataFrame, tiny_pipeline: Any, mode: str
) -> None:
    latest, candidate = LoadedModel("latest", tiny_pipeline, {}), LoadedModel("candidate", tiny_pipeline, {})
    settings = ServeSettings.model_validate({"candidate_mode": mode, "canary_share": 0.4})
    frame = tiny_data.head(30).reset_index(drop=True)
    ids = [f"id-{i}" for i in range(len(frame))]
    metrics = ServeMetrics()
    agreed, agree = (
        "purchase_classifier_serve_shadow_comparisons_total",
        {"model_version": "candidate", "result": "agree"},
    )

    async def scenario() -> Any:
        batcher = MicroBatcher(settings, metrics)
        batcher.start()
        try:
            result = await answer(batcher, settings, Models(latest, candidate), columns(frame), ids)
            for _ in range(200):  # the shadow call runs after the answer
                if mode != "shadow" or metrics.registry.get_sample_value(agreed, agree) is not None:
                    break
                await asyncio.sleep(0.05)
            return result
        finally:
            await batcher.stop()

    result = asyncio.run(scenario())
    chosen = [mode == "canary" and canary_position(i) < 0.4 for i in ids]
    assert result.model_version == ["candidate" if c else "latest" for c in chosen]
    assert 0 < sum(chosen) < len(ids) or mode != "canary"  # a canary request is split and merged back
    assert result.category == predict(tiny_pipeline, frame).category.tolist()  # rows kept in order
    compared = metrics.registry.get_sample_value(agreed, agree)
    assert compared == (len(ids) if mode == "shadow" else None)  # same pipeline: it always agrees


def test_a_version_the_store_cannot_read_is_retried_a_corrupt_one_is_not(tmp_path: Path, tiny_pipeline: Any) -> None:
    store = tmp_path / "store"
    state = ModelState(ServeSettings(store=str(store)), ServeMetrics())
    first = save_model(store, tiny_pipeline)
    assert state.check_once() and state.current is not None and state.current.version == first

    unreadable = save_model(store, tiny_pipeline)
    artifact = store / "models" / MODEL / unreadable / ARTIFACT
    artifact.rename(artifact.with_suffix(".aside"))
    artifact.mkdir()  # reading it fails like an unreachable store, not like a bad artifact
    assert not state.check_once()
    assert state.last_error is not None and "retried" in state.last_error and state.current.version == first
    artifact.rmdir()
    artifact.with_suffix(".aside").rename(artifact)
    assert state.check_once() and state.current.version == unreadable

    corrupt = save_model(store, tiny_pipeline)
    artifact = store / "models" / MODEL / corrupt / ARTIFACT
    good = artifact.read_bytes()
    artifact.write_bytes(good[:100])
    assert not state.check_once() and "refused" in (state.last_error or "")
    artifact.write_bytes(good)
    assert not state.check_once() and state.current.version == unreadable  # not tried again
