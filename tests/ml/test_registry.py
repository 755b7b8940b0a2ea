"""The registry on a local directory and on a real S3 API server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ml import schema
from ml.cli import main
from ml.errors import BadInputError, ExitCode, IntegrityError, NotFoundError
from ml.model import predict
from ml.registry import LATEST, METADATA, ModelRegistry


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket_url")


def metadata(macro_f1: float) -> dict:
    return {"metrics": {"accuracy": 0.9, "macro_f1": macro_f1, "n_rows": 10}}


def test_saved_version_is_invisible_until_promoted(store_url, trained_model, purchases_sample) -> None:
    registry = ModelRegistry(store_url)
    version = registry.save(trained_model.pipeline, metadata(0.5))
    assert registry.latest_version() is None
    with pytest.raises(NotFoundError, match="no LATEST"):
        registry.load()
    registry.promote(version)
    loaded = registry.load()
    assert loaded.version == version
    frame = schema.coerce(purchases_sample.head(5), labeled=True)
    assert list(predict(loaded.pipeline, frame).category) == list(trained_model.pipeline.predict(frame))
    meta = registry.metadata(version)
    assert meta["sha256"] and meta["size_bytes"] > 0 and meta["name"] == "purchase-classifier"
    assert [v["version"] for v in registry.versions()] == [version]


def test_gate_keeps_latest_when_new_model_is_worse(store_url, trained_model) -> None:
    registry = ModelRegistry(store_url)
    first = registry.save(trained_model.pipeline, metadata(0.60))
    registry.promote(first)
    assert not registry.gate({"macro_f1": 0.58}, tolerance=0.01).promoted
    assert registry.gate({"macro_f1": 0.595}, tolerance=0.01).promoted
    assert registry.latest_version() == first


def test_corrupted_or_truncated_artifact_is_refused(store_url, trained_model) -> None:
    registry = ModelRegistry(store_url)
    version = registry.save(trained_model.pipeline, metadata(0.5))
    registry.promote(version)
    artifact = f"{registry.root}/{version}/model.joblib"
    original = registry.fs.cat_file(artifact)
    registry.fs.pipe_file(artifact, original[: len(original) // 2])
    with pytest.raises(IntegrityError, match="corrupt or truncated"):
        registry.load()
    flipped = bytearray(original)
    flipped[100] ^= 0xFF
    registry.fs.pipe_file(artifact, bytes(flipped))
    with pytest.raises(IntegrityError, match="sha256"):
        registry.load()


def test_interrupted_write_without_metadata_is_not_a_version(store_url, trained_model) -> None:
    registry = ModelRegistry(store_url)
    partial = f"{registry.root}/20990101T000000Z-dead00"
    registry.fs.makedirs(partial, exist_ok=True)
    registry.fs.pipe_file(f"{partial}/model.joblib", b"partial")
    assert registry.versions() == []
    with pytest.raises(NotFoundError, match="no complete version"):
        registry.promote("20990101T000000Z-dead00")
    assert registry.latest_version() is None


def test_local_latest_is_replaced_atomically(tmp_path, trained_model) -> None:
    registry = ModelRegistry(str(tmp_path / "store"))
    first = registry.save(trained_model.pipeline, metadata(0.5))
    registry.promote(first)
    second = registry.save(trained_model.pipeline, metadata(0.6))
    registry.promote(second)
    root = tmp_path / "store" / "models" / "purchase-classifier"
    assert (root / LATEST).read_text() == second
    assert sorted(p.name for p in root.iterdir()) == sorted([first, second, LATEST])  # no temp files left
    assert json.loads((root / second / METADATA).read_text())["metrics"]["macro_f1"] == 0.6


def test_versions_listed_oldest_first(tmp_path, trained_model) -> None:
    registry = ModelRegistry(str(tmp_path / "store"), name="other")
    made = [registry.save(trained_model.pipeline, metadata(0.1 * i)) for i in range(3)]
    assert [v["version"] for v in registry.versions()] == sorted(made)
    assert pd.Series([v["metrics"]["macro_f1"] for v in registry.versions()]).is_monotonic_increasing


def test_model_this_code_cannot_run_is_refused_at_load(tmp_path) -> None:
    registry = ModelRegistry(str(tmp_path / "store"))
    version = registry.save({"not": "a pipeline"}, metadata(0.5))
    registry.promote(version)
    with pytest.raises(BadInputError, match="cannot be used by this code"):
        registry.load()


def test_candidate_is_proposed_promoted_and_rejected(store_url, trained_model) -> None:
    registry = ModelRegistry(store_url)
    first = registry.save(trained_model.pipeline, metadata(0.5))
    registry.promote(first)
    second = registry.save(trained_model.pipeline, metadata(0.6))
    assert registry.candidate_version() is None
    with pytest.raises(NotFoundError, match="no CANDIDATE"):
        registry.promote_candidate()
    with pytest.raises(BadInputError, match="already LATEST"):
        registry.propose(first)
    with pytest.raises(NotFoundError, match="no complete version"):
        registry.propose("20990101T000000Z-dead00")

    registry.propose(second)
    assert registry.candidate_version() == second and registry.latest_version() == first
    assert registry.load().version == first  # readers that are not told keep LATEST (batch predict)
    assert registry.load("candidate").version == second
    assert [v["version"] for v in registry.versions()] == [first, second]  # pointers are not versions

    assert registry.reject_candidate() == second
    assert registry.candidate_version() is None and registry.latest_version() == first
    with pytest.raises(NotFoundError, match="no CANDIDATE"):
        registry.reject_candidate()

    registry.propose(second)
    assert registry.promote_candidate() == second
    assert registry.latest_version() == second and registry.candidate_version() is None
    assert not registry.fs.exists(f"{registry.root}/CANDIDATE")


def test_a_candidate_equal_to_latest_reads_as_none(tmp_path, trained_model) -> None:
    """Mid-promotion (LATEST written, CANDIDATE not yet removed) readers see no candidate."""
    registry = ModelRegistry(str(tmp_path / "store"))
    version = registry.save(trained_model.pipeline, metadata(0.5))
    registry.promote(version)
    (tmp_path / "store" / "models" / "purchase-classifier" / "CANDIDATE").write_text(version)
    assert registry.candidate_version() is None


def test_models_cli_gates_the_candidate_then_promotes_or_rejects(tmp_path, trained_model, capsys) -> None:
    store = str(tmp_path / "store")
    registry = ModelRegistry(store)
    latest = registry.save(trained_model.pipeline, metadata(0.60))
    registry.promote(latest)
    worse = registry.save(trained_model.pipeline, metadata(0.40))
    better = registry.save(trained_model.pipeline, metadata(0.61))

    assert main(["models", "candidate", worse, "--store", store]) == ExitCode.GATE_REJECTED
    assert "not made CANDIDATE" in capsys.readouterr().err
    assert registry.candidate_version() is None

    assert main(["models", "candidate", better, "--store", store]) == 0
    assert json.loads(capsys.readouterr().out)["candidate"] == better
    assert main(["models", "list", "--store", store, "--json"]) == 0
    listed = {v["version"]: v for v in json.loads(capsys.readouterr().out)}
    assert listed[better]["candidate"] and listed[latest]["latest"] and not listed[worse]["candidate"]

    assert main(["models", "reject", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out) == {"rejected": better}
    assert main(["models", "promote", "--store", store]) == ExitCode.NOT_FOUND
    assert "no CANDIDATE" in capsys.readouterr().err

    assert main(["models", "candidate", better, "--store", store]) == 0
    assert main(["models", "promote", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"latest": better}
    assert registry.latest_version() == better and registry.candidate_version() is None
