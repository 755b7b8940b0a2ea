"""In-process pieces of the service: settings precedence, the micro-batcher's grouping, and which
version answers each record in each candidate mode."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml.cli import build_parser
from ml.errors import BadInputError
from ml.model import predict
from ml.registry import ARTIFACT, LoadedModel, ModelRegistry
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


class CallSpy(MicroBatcher):
    """Records the rows of each model call, as (request description prefix, rows) per part."""

    calls: list[list[int]]

    def _call(self, model: LoadedModel, role: str, parts: list[Columns], count_batch: bool = True) -> Any:
        self.calls.append([len(part) for part in parts])
        return super()._call(model, role, parts, count_batch)


def spy(settings: ServeSettings) -> CallSpy:
    batcher = CallSpy(settings, ServeMetrics())
    batcher.calls = []
    return batcher


def test_a_call_never_exceeds_its_row_and_character_budgets(tiny_data: pd.DataFrame, tiny_pipeline: Any) -> None:
    model = LoadedModel("v1", tiny_pipeline, {})
    frame = tiny_data.head(40).reset_index(drop=True)
    wide = frame.assign(description=frame["description"] + " " + "X" * 900)  # ~1,000 characters a row
    batcher = spy(ServeSettings(max_batch_records=5, max_batch_chars=3000))

    async def scenario() -> list[Any]:
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(model, columns(frame.iloc[i : i + 2])) for i in range(0, 20, 2)),
                batcher.submit(model, columns(wide)),
            )
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert max(sum(call) for call in batcher.calls) <= 5
    for result, part in zip(results, [*(frame.iloc[i : i + 2] for i in range(0, 20, 2)), wide], strict=True):
        assert result.category == predict(tiny_pipeline, part).category.tolist()  # every row, in order
    assert all(rows <= 3 for call in batcher.calls for rows in call)  # the wide request: ≤3,000 characters a call


def test_a_small_request_beside_big_ones_rides_in_the_next_call(tiny_data: pd.DataFrame, tiny_pipeline: Any) -> None:
    """Four 1,000-row requests queued first; a one-record request after them is answered after at
    most two calls (the one in progress and its own), not after the big requests' 4,000 rows."""
    model = LoadedModel("v1", tiny_pipeline, {})
    big = pd.concat([tiny_data] * 5, ignore_index=True).head(1000)
    batcher = spy(ServeSettings(max_batch_records=64))
    calls_before_small: list[int] = []

    async def scenario() -> None:
        batcher.start()
        try:
            bigs = [asyncio.ensure_future(batcher.submit(model, columns(big))) for _ in range(4)]
            await asyncio.sleep(0.05)  # the big ones are in the line and a call is under way
            started = len(batcher.calls)
            await batcher.submit(model, columns(tiny_data.head(1)))
            calls_before_small.append(len(batcher.calls) - started)
            for result in await asyncio.gather(*bigs):
                assert len(result.category) == 1000
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert calls_before_small[0] <= 2
    assert max(sum(call) for call in batcher.calls) <= 64


def test_rows_of_a_cancelled_request_never_reach_the_model(tiny_data: pd.DataFrame, tiny_pipeline: Any) -> None:
    model = LoadedModel("v1", tiny_pipeline, {})
    big = pd.concat([tiny_data] * 5, ignore_index=True).head(1000)
    batcher = spy(ServeSettings(max_batch_records=50))

    async def scenario() -> None:
        batcher.start()
        try:
            request = asyncio.ensure_future(batcher.submit(model, columns(big)))
            while not batcher.calls:
                await asyncio.sleep(0.001)
            request.cancel()  # the client went away after the first call started
            await asyncio.gather(request, return_exceptions=True)
            await batcher.submit(model, columns(tiny_data.head(1)))  # the worker goes on
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert sum(sum(call) for call in batcher.calls) <= 2 * 50 + 1  # not the 1,000 rows


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


def test_model_info_shows_no_locations(tmp_path: Path, tiny_pipeline: Any) -> None:
    store = tmp_path / "store"
    registry = ModelRegistry(str(store), MODEL)
    metadata = {"metrics": {"macro_f1": 0.9}, "data": {"source": "/home/me/secret/train.csv", "rows": 10}}
    registry.promote(registry.save(tiny_pipeline, metadata))
    state = ModelState(ServeSettings(store=str(store)), ServeMetrics())
    assert state.check_once()
    shown = json.dumps(state.describe())
    assert "secret" not in shown and str(tmp_path) not in shown
    assert state.describe()["data"]["rows"] == 10 and state.describe()["metrics"]["macro_f1"] == 0.9


@pytest.mark.parametrize(
    ("metadata", "override", "flagged"),
    [
        ({"review_threshold": 1.0}, None, True),
        ({"review_threshold": 0.0}, None, False),
        ({"review_threshold": 0.0}, 1.0, True),
        ({}, None, None),
    ],
)
def test_needs_review_uses_the_models_threshold_unless_overridden(
    tiny_data: pd.DataFrame, tiny_pipeline: Any, metadata: dict[str, Any], override: float | None, flagged: bool | None
) -> None:
    model = LoadedModel("v1", tiny_pipeline, metadata)
    frame = tiny_data.head(20)

    async def scenario() -> Any:
        batcher = MicroBatcher(ServeSettings(review_threshold=override), ServeMetrics())
        batcher.start()
        try:
            return await batcher.submit(model, columns(frame))
        finally:
            await batcher.stop()

    result = asyncio.run(scenario())
    expected = predict(tiny_pipeline, frame).confidence < 0.5  # no threshold in the metadata: the default
    assert result.needs_review == ([flagged] * len(frame) if flagged is not None else expected.tolist())
