"""The registry on a local directory and on a real S3 API server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import json

import joblib
import pandas as pd
import pytest

from ml import artifacts, schema
from ml.cli import main
from ml.errors import BadInputError, ExitCode, IntegrityError, NotFoundError
from ml.model import predict
from ml.registry import ARTIFACT, LATEST, METADATA, ModelRegistry, new_version


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
    artifact = f"{registry.root}/{version}/{ARTIFACT}"
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
    registry.fs.pipe_file(f"{partial}/{ARTIFACT}", b"partial")
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


def test_model_this_code_cannot_run_is_never_pointed_at_nor_loaded(tmp_path) -> None:
    registry = ModelRegistry(str(tmp_path / "store"))
    version = registry.save({"not": "a pipeline"}, metadata(0.5))
    with pytest.raises(BadInputError, match="cannot be used by this code"):
        registry.promote(version)
    assert registry.latest_version() is None
    (tmp_path / "store" / "models" / "purchase-classifier" / LATEST).write_text(version)  # planted by hand
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


def save_legacy(registry: ModelRegistry, pipeline, macro_f1: float) -> str:
    """A version as ``ml train`` stored it before skops: a joblib pickle, metadata without ``format``."""
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    artifact = buffer.getvalue()
    version = new_version()
    registry.fs.makedirs(f"{registry.root}/{version}", exist_ok=True)
    registry.fs.pipe_file(f"{registry.root}/{version}/model.joblib", artifact)
    fields = {"name": registry.name, "version": version, "artifact": "model.joblib", "created_at": "2026-01-01"}
    fields |= {"sha256": hashlib.sha256(artifact).hexdigest(), "size_bytes": len(artifact)}
    registry.fs.pipe_file(
        f"{registry.root}/{version}/{METADATA}", json.dumps({**metadata(macro_f1), **fields}).encode()
    )
    return version


def test_trusted_types_are_exactly_what_a_trained_pipeline_holds(trained_model) -> None:
    """The one list changes with the pipeline or a library: this says when and to what."""
    held = artifacts.types_in(artifacts.dumps(trained_model.pipeline))
    # Kept for models fitted before their vectorizers were compact (converted from joblib).
    legacy = {"ml.features.price_keys", "sklearn.feature_extraction.text.TfidfVectorizer"}
    assert held | legacy == artifacts.TRUSTED_TYPES, sorted(held ^ artifacts.TRUSTED_TYPES)


def test_new_versions_are_skops_with_their_provenance(tmp_path, trained_model, monkeypatch) -> None:
    monkeypatch.setenv("ML_IMAGE_DIGEST", "sha256:" + "ab" * 32)
    monkeypatch.setenv("ML_SOURCE_REVISION", "0123456789abcdef0123456789abcdef01234567")
    registry = ModelRegistry(str(tmp_path / "store"))
    version = registry.save(trained_model.pipeline, metadata(0.5))
    meta = registry.metadata(version)
    assert (meta["format"], meta["artifact"]) == ("skops", ARTIFACT)
    assert meta["image_digest"] == "sha256:" + "ab" * 32
    assert meta["source_revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert (tmp_path / "store" / "models" / "purchase-classifier" / version / "model.skops").read_bytes()[:2] == b"PK"


def test_a_joblib_version_loads_only_when_opted_in_and_converts_in_place(
    tmp_path, trained_model, purchases_sample, monkeypatch, capsys
) -> None:
    store = str(tmp_path / "store")
    registry = ModelRegistry(store)
    version = save_legacy(registry, trained_model.pipeline, 0.5)
    (tmp_path / "store" / "models" / "purchase-classifier" / LATEST).write_text(version)  # as an old train left it
    old_sha = registry.metadata(version)["sha256"]

    with pytest.raises(BadInputError, match=r"stored as a joblib pickle.*python -m ml models convert"):
        registry.load()
    monkeypatch.setenv("ML_ALLOW_PICKLE_MODELS", "yes")
    with pytest.raises(BadInputError, match="ML_ALLOW_PICKLE_MODELS must be 0 or 1, got 'yes'"):
        registry.load()
    monkeypatch.setenv("ML_ALLOW_PICKLE_MODELS", "1")
    assert registry.load().version == version
    # verify uses the safe loader alone, whatever the opt-in: a pickle never passes
    assert main(["models", "verify", version, "--store", store]) == ExitCode.BAD_INPUT
    assert "stored as a joblib pickle" in capsys.readouterr().err
    monkeypatch.delenv("ML_ALLOW_PICKLE_MODELS")

    assert main(["models", "convert", "latest", "--store", store]) == 0
    converted = json.loads(capsys.readouterr().out)
    assert converted["version"] == version and converted["format"] == "skops"
    assert converted["converted"]["from_format"] == "joblib" and converted["converted"]["from_sha256"] == old_sha
    meta = registry.metadata(version)
    assert (meta["format"], meta["artifact"], meta["metrics"]) == ("skops", ARTIFACT, metadata(0.5)["metrics"])
    assert registry.fs.exists(f"{registry.root}/{version}/model.joblib")  # kept, no longer referenced
    assert registry.latest_version() == version
    loaded = registry.load()
    frame = schema.coerce(purchases_sample.head(20), labeled=True)
    assert list(predict(loaded.pipeline, frame).category) == list(predict(trained_model.pipeline, frame).category)

    assert main(["models", "convert", version, "--store", store]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": version, "format": "skops", "converted": False}


def test_candidate_and_promote_refuse_a_version_that_does_not_verify(tmp_path, trained_model, capsys) -> None:
    store = str(tmp_path / "store")
    registry = ModelRegistry(store)
    latest = registry.save(trained_model.pipeline, metadata(0.5))
    registry.promote(latest)
    pickled = save_legacy(registry, trained_model.pipeline, 0.9)
    assert main(["models", "candidate", pickled, "--store", store]) == ExitCode.BAD_INPUT
    assert "stored as a joblib pickle" in capsys.readouterr().err
    assert registry.candidate_version() is None

    good = registry.save(trained_model.pipeline, metadata(0.9))
    assert main(["models", "candidate", good, "--store", store]) == 0
    artifact = f"{registry.root}/{good}/{ARTIFACT}"
    registry.fs.pipe_file(artifact, registry.fs.cat_file(artifact)[:-10])  # damaged after it was proposed
    assert main(["models", "promote", "--store", store]) == ExitCode.BAD_INPUT
    assert "corrupt or truncated" in capsys.readouterr().err
    assert registry.latest_version() == latest and registry.candidate_version() == good


def test_verify_prints_each_check_and_names_the_failing_one(tmp_path, trained_model, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ML_IMAGE_DIGEST", "sha256:" + "cd" * 32)
    store = str(tmp_path / "store")
    registry = ModelRegistry(store)
    version = registry.save(trained_model.pipeline, metadata(0.5))
    assert main(["models", "verify", version, "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [
        ["ok", check] for check in ("names", "metadata", "artifact", "load")
    ]
    assert (
        "format skops" in lines[1] and "sha256:" + "cd" * 32 in lines[1] and "source revision not recorded" in lines[1]
    )
    assert registry.metadata(version)["sha256"] in lines[2]
    assert lines[-1] == f"verified purchase-classifier/{version}"

    path = tmp_path / "store" / "models" / "purchase-classifier" / version / METADATA
    other = registry.save(trained_model.pipeline, metadata(0.5))
    path.write_text((path.parent.parent / other / METADATA).read_text())  # another version's metadata
    assert main(["models", "verify", version, "--store", store]) == ExitCode.BAD_INPUT
    assert f"metadata: version is '{other}', expected '{version}'" in capsys.readouterr().err


def test_models_list_shows_unreadable_metadata_as_broken_and_lists_the_rest(tmp_path, trained_model, capsys) -> None:
    store = str(tmp_path / "store")
    registry = ModelRegistry(store)
    good = registry.save(trained_model.pipeline, metadata(0.5))
    registry.promote(good)
    garbage, not_object = (registry.save(trained_model.pipeline, metadata(0.5)) for _ in range(2))
    root = tmp_path / "store" / "models" / "purchase-classifier"
    (root / garbage / METADATA).write_bytes(b"\xff\x00not json")
    (root / not_object / METADATA).write_text("[1, 2]")

    assert main(["models", "list", "--store", store, "--json"]) == 0
    listed = {entry["version"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed[good]["latest"] and "broken" not in listed[good]
    assert "is not valid JSON" in listed[garbage]["broken"]
    assert "is not a JSON object" in listed[not_object]["broken"]
    assert main(["models", "list", "--store", store]) == 0
    table = capsys.readouterr().out
    assert good in table and garbage in table and table.count("broken") == 2
