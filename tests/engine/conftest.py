"""The engine layer: the real tools (built from Go modules by ``engine/build-tools``) against a real
local control plane (``engine/control-plane``). Nothing here is mocked.

- ``engine_bin``: the directory of the built binaries. A machine without them builds them here,
  through the same script as ``make engine-tools`` (tens of minutes cold, cached afterwards).
- ``control_plane``: one control plane per test module (etcd, API server with Pod Security
  admission, controller manager, scheduler, kwok fake nodes), stopped at the end.
- ``kubectl``: runs the built kubectl against it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"
BUILD_TIMEOUT = 3 * 3600
"""A cold build of every family on 2 busy cores; the tools are cached after the first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The first engine test may build the tools (far beyond the suite's per-test timeout); every
    # command these tests run has its own timeout, so a hang still ends.
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


def build_tools(*families: str) -> Path:
    """``engine/build-tools`` (builds on first use, cached afterwards); its last line is the bin dir."""
    out = subprocess.run(
        [str(ENGINE / "build-tools"), *families],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def engine_bin() -> Path:
    return build_tools("cluster")


@dataclass(frozen=True)
class ControlPlane:
    dir: Path
    bin: Path

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{self.bin}:{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def control_plane(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane per test module: no other module's objects in its namespace."""
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), engine_bin)
    script = str(ENGINE / "control-plane")
    env = {**os.environ, "ENGINE_BIN": str(engine_bin)}
    subprocess.run([script, "start", str(plane.dir)], check=True, env=env, timeout=300)
    try:
        yield plane
    finally:
        subprocess.run([script, "stop", str(plane.dir)], check=True, env=env, timeout=120)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", *args],
            env=control_plane.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)
