"""Fixtures for the serving tests: tiny models in ``tmp_path`` stores and real server processes.

Each server is ``python -m ml serve`` in its own process on a free loopback port, talked to with a
real HTTP client, and stopped by its pid. Import the fixtures into a test module with
``from tests.ml.serve_fixtures import *``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ml.model import build_pipeline
from ml.registry import ModelRegistry
from ml.schema import CATEGORY, coerce, read_records
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "purchases_labeled.csv.gz"
MODEL = "purchase-classifier"

__all__ = ["Server", "free_port", "save_model", "server", "start_server", "tiny_data", "tiny_pipeline"]


@pytest.fixture(scope="session")
def tiny_data() -> pd.DataFrame:
    """A few hundred labelled rows of the shared data: the four most common categories."""
    frame = coerce(read_records(str(DATA)), labeled=True)
    top = frame[CATEGORY].value_counts().index[:4]
    return (
        frame[frame[CATEGORY].isin(top)]
        .groupby(CATEGORY, group_keys=False)
        .sample(n=60, random_state=0)
        .reset_index(drop=True)
    )


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_data: pd.DataFrame) -> Any:
    return build_pipeline().fit(tiny_data, tiny_data[CATEGORY])


def save_model(store: Path, pipeline: Any, *, promote: bool = True, f1: float = 0.9) -> str:
    registry = ModelRegistry(str(store), MODEL)
    version = registry.save(pipeline, {"metrics": {"macro_f1": f1}, "training_snapshot": "tests"})
    if promote:
        registry.promote(version)
    return version


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def wait(self, path: str, status: int = 200, timeout: float = 90) -> httpx.Response:
        """Poll ``path`` until it answers ``status`` (the server process must stay up)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                last = httpx.get(self.url + path, timeout=5)
                if last.status_code == status:
                    return last
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered {status}; last {last!r}\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_server(store: Path, log: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """``python -m ml serve`` on a free port; returns once ``/healthz`` answers."""
    port = free_port()
    command = [sys.executable, "-m", "ml", "serve", "--store", str(store), "--port", str(port), *extra]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        server.wait("/healthz")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline: Any) -> Iterator[Server]:
    """A server with one promoted tiny model, ready (shared by the API and fuzz tests)."""
    base = tmp_path_factory.mktemp("serve")
    save_model(base / "store", tiny_pipeline)
    running = start_server(
        base / "store", base / "server.log", "--review-threshold", "0.6", "--max-request-records", "50"
    )
    try:
        running.wait("/readyz")
        yield running
    finally:
        running.stop()
