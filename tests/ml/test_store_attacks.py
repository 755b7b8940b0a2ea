"""A planted model store must never make a reader run code or read outside the store.

Each attack is written into a store as an attacker with write access to the bucket would, then read
the three ways the project reads models: the registry's load (batch predict), ``ml evaluate --model
STORE`` and the service's reload path (:class:`ml.serve.state.ModelState`, as the server runs it).
The pickles, if ever unpickled, create a marker file; every test asserts it never appears.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import skops.io as sio

from ml.cli import main
from ml.errors import ExitCode, MlError
from ml.registry import LATEST, METADATA, ModelRegistry, new_version
from ml.serve.metrics import ServeMetrics
from ml.serve.settings import ServeSettings
from ml.serve.state import ModelState
from ml.settings import ALLOW_PICKLE_ENV, DEFAULT_MODEL_NAME


class RunsCode:
    """Unpickling this calls ``open(marker, "w")``: the file appears if and only if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def plant_version(directory: str, data: bytes, *, version: str, **fields: object) -> None:
    """A version directory whose metadata matches ``data`` (name, version, sha256, size).

    The artifact file is written under the name metadata gives it, unless that name has a slash.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    name = str(fields.get("artifact", "model.joblib"))
    if "/" not in name:
        (path / name).write_bytes(data)
    metadata = {
        "name": DEFAULT_MODEL_NAME,
        "version": version,
        "artifact": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "metrics": {"accuracy": 0.99, "macro_f1": 0.99},
        "created_at": "2026-01-01T00:00:00+00:00",
        **fields,
    }
    (path / METADATA).write_text(json.dumps(metadata))


def read_with_registry(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    with pytest.raises(MlError) as refused:
        ModelRegistry(store).load()
    return str(refused.value)


def read_with_evaluate(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    capsys = request.getfixturevalue("capsys")
    data = tmp_path / "labelled.csv"
    data.write_text("description,cost,contract,department,category\nSUT SILK 3-0 SA74H,12.5,,SURGERY,Sutures\n")
    code = main(["evaluate", "--model", store, "--data", str(data), "--plot", str(tmp_path / "plot.png")])
    assert code == ExitCode.BAD_INPUT
    assert not (tmp_path / "plot.png").exists()
    return capsys.readouterr().err


def read_with_service(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The reload poll: nothing is served, and the log says why (clients see no store details)."""
    caplog = request.getfixturevalue("caplog")
    state = ModelState(ServeSettings(store=store, candidate_mode="shadow"), ServeMetrics())
    assert not state.check_once()
    assert state.current is None
    assert state.last_error is not None
    return caplog.text


READERS = {"registry": read_with_registry, "evaluate": read_with_evaluate, "service": read_with_service}
Reader = Callable[[str, Path, pytest.FixtureRequest], str]


@pytest.fixture(params=sorted(READERS))
def read(request: pytest.FixtureRequest) -> Reader:
    return READERS[request.param]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture
def opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pickles allowed: the escapes must be refused even where the operator trusts the store's pickles."""
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")


def model_root(store: Path) -> Path:
    return store / "models" / DEFAULT_MODEL_NAME


@pytest.mark.usefixtures("opted_in")
def test_latest_pointing_outside_the_store_is_refused(tmp_path: Path, marker: Path, read: Reader, request) -> None:
    store = tmp_path / "store"
    model_root(store).mkdir(parents=True)
    plant_version(str(tmp_path / "outside"), pickle.dumps(RunsCode(marker)), version="outside", format="joblib")
    (model_root(store) / LATEST).write_text("../../../outside")
    assert (model_root(store) / "../../../outside" / METADATA).exists()  # the attack would reach it

    error = read(str(store), tmp_path, request)

    assert "LATEST of model 'purchase-classifier' is '../../../outside', not a valid name" in error
    assert not marker.exists()


@pytest.mark.usefixtures("opted_in")
def test_metadata_artifact_outside_the_version_is_refused(tmp_path: Path, marker: Path, read: Reader, request) -> None:
    store = tmp_path / "store"
    payload = pickle.dumps(RunsCode(marker))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "model.joblib").write_bytes(payload)
    version = new_version()
    escape = "../../../../outside/model.joblib"
    plant_version(str(model_root(store) / version), payload, version=version, artifact=escape, format="joblib")
    (model_root(store) / LATEST).write_text(version)
    assert (model_root(store) / version / escape).exists()  # the attack would reach it

    error = read(str(store), tmp_path, request)

    assert f"metadata of purchase-classifier/{version}: artifact is '{escape}', not a valid name" in error
    assert not marker.exists()


def test_a_pickle_with_a_matching_sha256_is_never_unpickled(
    tmp_path: Path, marker: Path, read: Reader, request
) -> None:
    """Whoever can write the bucket can write a pickle and its sha256: without the opt-in it is refused."""
    store = tmp_path / "store"
    version = new_version()
    plant_version(
        str(model_root(store) / version), pickle.dumps(RunsCode(marker)), version=version
    )  # no format: legacy
    (model_root(store) / LATEST).write_text(version)

    error = read(str(store), tmp_path, request)

    assert f"model purchase-classifier/{version} is stored as a joblib pickle" in error
    assert "python -m ml models convert" in error and ALLOW_PICKLE_ENV in error
    assert not marker.exists()


def test_a_pickle_posing_as_skops_is_refused(tmp_path: Path, marker: Path, read: Reader, request) -> None:
    store = tmp_path / "store"
    version = new_version()
    payload = pickle.dumps(RunsCode(marker))
    plant_version(str(model_root(store) / version), payload, version=version, format="skops", artifact="model.skops")
    (model_root(store) / LATEST).write_text(version)

    error = read(str(store), tmp_path, request)

    assert "not a skops artifact" in error
    assert not marker.exists()


def test_a_skops_artifact_naming_an_untrusted_type_is_refused(tmp_path: Path, read: Reader, request) -> None:
    store = tmp_path / "store"
    version = new_version()
    artifact = sio.dumps({"steps": [print], "memory": None})
    plant_version(str(model_root(store) / version), artifact, version=version, format="skops", artifact="model.skops")
    (model_root(store) / LATEST).write_text(version)

    error = read(str(store), tmp_path, request)

    assert "artifact names types this project does not trust: builtins.print" in error


@pytest.mark.usefixtures("opted_in")
def test_a_version_directory_linking_outside_the_store_is_refused(
    tmp_path: Path, marker: Path, read: Reader, request
) -> None:
    store = tmp_path / "store"
    version = new_version()
    plant_version(str(tmp_path / "outside"), pickle.dumps(RunsCode(marker)), version=version, format="joblib")
    model_root(store).mkdir(parents=True)
    (model_root(store) / version).symlink_to(tmp_path / "outside")
    (model_root(store) / LATEST).write_text(version)

    error = read(str(store), tmp_path, request)

    assert f"{version}/metadata.json in model 'purchase-classifier' resolves outside its directory" in error
    assert not marker.exists()


def test_s3_latest_pointing_outside_the_store_is_refused(
    s3_bucket_url: str, tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    store = f"{s3_bucket_url}/store"
    registry = ModelRegistry(store)
    local = tmp_path / "outside"
    plant_version(str(local), pickle.dumps(RunsCode(marker)), version="outside", format="joblib")
    bucket = s3_bucket_url.removeprefix("s3://")
    for file in local.iterdir():
        registry.fs.pipe_file(f"{bucket}/outside/{file.name}", file.read_bytes())
    registry.fs.pipe_file(f"{registry.root}/{LATEST}", b"../../../outside")

    with pytest.raises(MlError, match=re.escape("LATEST of model 'purchase-classifier' is '../../../outside'")):
        registry.load()
    state = ModelState(ServeSettings(store=store), ServeMetrics())
    assert not state.check_once() and state.current is None
    assert "'../../../outside', not a valid name" in caplog.text
    assert not marker.exists()


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".hidden", "v1\n../x", "x" * 200])
def test_names_given_on_the_command_line_cannot_leave_the_store(tmp_path: Path, name: str, capsys) -> None:
    store = str(tmp_path / "store")
    assert main(["models", "verify", name, "--store", store]) == ExitCode.BAD_INPUT
    assert "the version is" in capsys.readouterr().err
    assert main(["models", "show", "--store", store, "--model-name", name]) == ExitCode.BAD_INPUT
    assert "the model name is" in capsys.readouterr().err


@pytest.mark.usefixtures("opted_in")
def test_the_planted_pickle_is_live_where_an_operator_opts_in(tmp_path: Path, marker: Path) -> None:
    """The control: with ML_ALLOW_PICKLE_MODELS=1 the same payload runs, so the refusals above are real."""
    store = tmp_path / "store"
    version = new_version()
    plant_version(str(model_root(store) / version), pickle.dumps(RunsCode(marker)), version=version)
    (model_root(store) / LATEST).write_text(version)
    with pytest.raises(MlError, match="cannot be used by this code"):
        ModelRegistry(str(store)).load()
    assert marker.exists()
