"""The parts of ``python -m infra.engine recover`` that decide before any engine runs: whose lock is
stale, which pending creates have an ID the program's names give. The whole loop (kill, recover,
up) runs on the real engine in tests/engine/test_interrupted.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.recover import Lock, _adopt, _process_runs, import_id, manual_command, owner_may_be_alive, read_locks
from tests.infra.harness import cached_run

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
HOST = socket.gethostname()


def _write_lock(state: Path, *, pid: int, hostname: str, at: datetime, stack: str = "local") -> Path:
    """A lock file where and as the CLI's file backend writes it."""
    directory = state / ".pulumi" / "locks" / "organization" / "purchase-classifier" / stack
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4()}.json"
    path.write_text(json.dumps({"pid": pid, "username": "ci", "hostname": hostname, "timestamp": at.isoformat()}))
    return path


def _lock(*, hostname: str = HOST, age: timedelta = timedelta(0), pid: int = 4242) -> Lock:
    return Lock(path="l.json", pid=pid, hostname=hostname, username="ci", timestamp=NOW - age)


def _recover(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m infra.engine recover ARGS`` from the repository root, as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "infra.engine", "recover", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_lock_of_this_host_is_alive_exactly_while_its_process_runs() -> None:
    old = _lock(age=timedelta(days=2))
    reason = owner_may_be_alive(old, now=NOW, hostname=HOST, process_runs=lambda pid: pid == 4242)
    assert reason is not None and "pid 4242" in reason and "still running" in reason
    assert owner_may_be_alive(_lock(), now=NOW, hostname=HOST, process_runs=lambda pid: False) is None


def test_a_lock_of_another_host_is_alive_while_younger_than_the_stated_age() -> None:
    young = _lock(hostname="runner-7", age=timedelta(minutes=59))
    reason = owner_may_be_alive(young, now=NOW, hostname=HOST, min_age=timedelta(minutes=60))
    assert reason is not None and "runner-7" in reason and "59 min old, younger than 60 min" in reason
    old = _lock(hostname="runner-7", age=timedelta(minutes=61))
    assert owner_may_be_alive(old, now=NOW, hostname=HOST, min_age=timedelta(minutes=60)) is None


def test_locks_are_read_from_the_backends_lock_directory(tmp_path: Path) -> None:
    _write_lock(tmp_path, pid=17, hostname="runner-7", at=NOW)
    _write_lock(tmp_path, pid=18, hostname="runner-8", at=NOW, stack="dev")
    (locks,) = [read_locks(f"file://{tmp_path}", "local")]
    assert [(lock.pid, lock.hostname, lock.timestamp) for lock in locks] == [(17, "runner-7", NOW)]


def test_recover_refuses_a_lock_whose_process_runs_and_changes_nothing(tmp_path: Path) -> None:
    lock = _write_lock(tmp_path, pid=os.getpid(), hostname=HOST, at=datetime.now(UTC) - timedelta(days=1))
    proc = _recover(
        "--stack",
        "local",
        "--backend",
        f"file://{tmp_path}",
        "--bin",
        str(tmp_path / "no-bin"),
        env={**os.environ, "PULUMI_CONFIG_PASSPHRASE": "unused"},
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"pid {os.getpid()} on {HOST}" in proc.stderr and "still running" in proc.stderr
    assert lock.exists()


def test_kubernetes_pending_creates_import_as_namespace_and_name() -> None:
    run = cached_run("local")
    ids = {
        f"{r.type}::{r.name}": import_id({"type": r.type, "custom": r.custom, "inputs": r.inputs})
        for r in run.resources
        if r.type.startswith("kubernetes:")
    }
    assert ids["kubernetes:apps/v1:Deployment::dask-workers"] == "purchase-classifier/dask-worker"
    assert ids["kubernetes:core/v1:Namespace::namespace"] == "purchase-classifier"  # cluster-scoped: the name alone
    assert None not in ids.values(), ids


def test_aws_pending_creates_import_only_where_the_programs_names_give_the_id() -> None:
    run = cached_run("dev")
    ids = {r.type: import_id({"type": r.type, "custom": r.custom, "inputs": r.inputs}) for r in run.resources}
    assert ids["aws:eks/cluster:Cluster"] == run.of_type("aws:eks/cluster:Cluster")[0].inputs["name"]
    assert ids["aws:ecr/repository:Repository"] == run.of_type("aws:ecr/repository:Repository")[0].inputs["name"]
    # IDs AWS chooses at creation: a person must look them up.
    assert ids["aws:ec2/vpc:Vpc"] is None
    assert ids["aws:kms/key:Key"] is None


def test_the_manual_command_is_quoted_for_a_shell() -> None:
    urn = "urn:pulumi:dev::purchase-classifier::aws:ec2/vpc:Vpc::network-vpc"
    assert manual_command("dev", urn) == f"python -m infra.engine recover --stack dev --import '{urn}=<ID>'"
    assert manual_command("dev", "urn:x::y$(rm -rf ~)", "i d") == (
        "python -m infra.engine recover --stack dev --import 'urn:x::y$(rm -rf ~)=i d'"
    )


def test_an_import_that_is_not_urn_and_id_is_refused_by_name() -> None:
    proc = _recover("--stack", "dev", "--backend", "file:///x", "--import", "vpc-123")
    assert proc.returncode == 2 and "--import vpc-123: expected URN=ID" in proc.stderr


@pytest.mark.parametrize("minutes", ["-1"])
def test_a_negative_lock_age_is_refused_by_name(minutes: str) -> None:
    proc = _recover("--stack", "local", "--backend", "file:///x", "--min-lock-age", minutes)
    assert proc.returncode == 2 and "--min-lock-age: got -1.0, expected minutes >= 0" in proc.stderr


def test_a_pending_create_with_an_id_becomes_a_resource_after_every_other() -> None:
    def res(name: str) -> dict[str, Any]:
        return {"urn": f"urn:pulumi:local::p::t::{name}", "type": "t", "custom": True, "inputs": {}}

    deployment = {
        "resources": [res("a")],
        "pending_operations": [
            {"type": "creating", "resource": res("b")},
            {"type": "creating", "resource": res("c")},
            {"type": "deleting", "resource": res("a")},
        ],
    }
    adopted = _adopt(deployment, {res("b")["urn"]: "ns/b"})
    assert [(r["urn"].rsplit("::", 1)[1], r.get("id")) for r in adopted["resources"]] == [("a", None), ("b", "ns/b")]
    assert [(o["type"], o["resource"]["urn"].rsplit("::", 1)[1]) for o in adopted["pending_operations"]] == [
        ("creating", "c"),
        ("deleting", "a"),
    ]
    # No ID: dropped (a component or a provider has nothing outside the state).
    dropped = _adopt(deployment, {res("c")["urn"]: None})
    assert [r["urn"] for r in dropped["resources"]] == [res("a")["urn"]]
    assert [o["type"] for o in dropped["pending_operations"]] == ["creating", "deleting"]


def test_a_killed_process_left_a_zombie_holds_no_lock() -> None:
    # A SIGKILLed CLI whose parent died too stays a zombie when no init reaps it: not running.
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert _process_runs(proc.pid)
        proc.kill()
        time.sleep(0.3)  # not waited for: a zombie until wait() below
        assert not _process_runs(proc.pid)
    finally:
        proc.wait()
