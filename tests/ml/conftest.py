"""Fixtures for the ML tests: the shipped data, stores and S3, Dask processes.

The labelled sample (``purchases_sample``) and the model fitted on it (``trained_model``) are in
``tests/conftest.py``, shared with every other test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest

from ml.registry import ModelRegistry
from tests.support.aws_api import moto_server
from tests.support.dask_processes import DaskProcesses


@pytest.fixture
def sample_csv(purchases_sample: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "sample.csv"
    purchases_sample.to_csv(path, index=False)
    return path


@pytest.fixture
def store_with_model(tmp_path: Path, trained_model) -> Callable[..., ModelRegistry]:
    """A local store with one promoted version whose validation macro-F1 is ``macro_f1``."""

    def make(macro_f1: float = 0.5) -> ModelRegistry:
        registry = ModelRegistry(str(tmp_path / "store"))
        version = registry.save(
            trained_model.pipeline, {"metrics": {"accuracy": 0.9, "macro_f1": macro_f1, "n_rows": 1}}
        )
        registry.promote(version)
        return registry

    return make


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real S3 API server (moto's) on 127.0.0.1; boto3/s3fs reach it through AWS_ENDPOINT_URL."""
    with moto_server() as endpoint:
        patch = pytest.MonkeyPatch()
        for key, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(key, value)
        yield endpoint
        patch.undo()


@pytest.fixture
def s3_bucket_url(s3_endpoint: str) -> str:
    """A fresh bucket per test: ``s3://<bucket>``."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[DaskProcesses]:
    """An unstarted cluster of scheduler/worker processes; the test calls ``.start(...)``."""
    workdir = tmp_path / "dask"
    workdir.mkdir()
    cluster = DaskProcesses(workdir)
    yield cluster
    cluster.stop()
