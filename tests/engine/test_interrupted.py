"""A deploy that is killed recovers with one command, on the real engine and control plane.

``python -m infra.engine up`` (and ``destroy``) of the ``local`` stack is killed with SIGKILL to its
process group, as a lost CI runner or a job timeout does, at a chosen point of its progress: after
the first object, in the middle, before the last. Then what the runbook says: ``python -m infra.engine
recover`` and ``up``. The stack must converge, the next preview must plan nothing, and every object
in the namespace must be one the state records, applied by the stack's one field manager (no object
left behind by the killed run, none with a second owner).

Each test starts from an empty stack (it destroys what the previous one left), so the kill points
see a first deploy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from infra import engine
from infra.k8s.common import field_manager
from infra.promote import set_digest
from infra.recover import read_locks
from tests.engine.conftest import ROOT, ControlPlane, build_tools

pytestmark = pytest.mark.slow

STACK = "local"
PROJECT = "purchase-classifier"
NAMESPACE = "purchase-classifier"
DIGEST = "sha256:" + "1" * 64
"""A stand-in digest: kwok runs no container."""
COMMAND_TIMEOUT_S = 600
"""A hang guard: the provider waits up to 10 min for a rollout by default."""
KINDS = "deployments,services,cronjobs,jobs,secrets,configmaps,serviceaccounts,networkpolicies,pdb,hpa"
"""What the program creates in its namespace (ReplicaSets and pods are the controllers')."""
CLUSTER_MADE = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}
"""What Kubernetes itself puts into every namespace."""
PROGRESS = {
    "up": re.compile(r"^\s*\+\s+kubernetes:\S+\s+\S+\s+created\b"),
    "destroy": re.compile(r"^\s*-\s+kubernetes:\S+\s+\S+\s+deleted\b"),
}
"""The CLI's progress line for an object created (or deleted)."""
VERSION_WARNING = re.compile(r"expected to have version|4\.0\.0-\d{14}")


@dataclass
class Env:
    stack: auto.Stack
    work_dir: Path
    state: Path
    bin: Path
    env: dict[str, str]
    objects: int
    """Kubernetes objects the stack declares."""

    def engine(self, command: str) -> list[str]:
        return [
            sys.executable, "-m", "infra.engine", command, "--stack", STACK, "--work-dir", str(self.work_dir),
            "--backend", f"file://{self.state}", "--bin", str(self.bin),
        ]  # fmt: skip

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.engine(command), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
        assert proc.returncode == 0, f"{command} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def kill_after(self, command: str, objects: int) -> str:
        """Run ``command`` and SIGKILL its process group once ``objects`` objects were created
        (``up``) or deleted (``destroy``); the output up to then."""
        proc = subprocess.Popen(
            self.engine(command),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the CLI and the provider die with it
        )
        assert proc.stdout is not None
        seen, lines = 0, []
        try:
            for line in proc.stdout:
                lines.append(line)
                seen += bool(PROGRESS[command].search(line))
                if seen >= objects:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
        finally:
            proc.wait(timeout=60)
        output = "".join(lines)
        assert seen >= objects, f"{command} ended before {objects} objects:\n{output}"
        return output

    def state_resources(self) -> list[dict[str, Any]]:
        return list((self.stack.export_stack().deployment or {}).get("resources") or [])

    def kubectl_json(self, *args: str) -> Any:
        proc = subprocess.run(
            ["kubectl", *args, "-o", "json"], env=self.env, capture_output=True, text=True, timeout=120, check=True
        )
        return json.loads(proc.stdout)

    def destroyed(self) -> None:
        """An empty stack and no namespace (what the previous test left is removed)."""
        if self.state_resources():
            self.stack.destroy(color="never")
        assert subprocess.run(["kubectl", "get", "namespace", NAMESPACE], env=self.env, capture_output=True).returncode


@pytest.fixture(scope="module")
def setup(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("interrupted")
    work_dir = base / "project"
    work_dir.mkdir()
    for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
        shutil.copy(ROOT / name, work_dir / name)
    (work_dir / "infra").symlink_to(ROOT / "infra")
    (base / "state").mkdir()
    set_digest(STACK, DIGEST, root=work_dir)
    env = {**control_plane.env(), "PULUMI_HOME": str(base / "home"), "PULUMI_CONFIG_PASSPHRASE": "engine-tests"}
    bin_dir = build_tools()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    stack = engine.open_stack(STACK, work_dir=work_dir, bin_dir=bin_dir, backend=f"file://{base / 'state'}", env=env)
    stack.set_config(f"{PROJECT}:cluster.context", auto.ConfigValue("local"), path=True)
    stack.set_config(f"{PROJECT}:kubeconfig", auto.ConfigValue(control_plane.kubeconfig.read_text(), secret=True))
    stack.set_config(
        f"{PROJECT}:databaseUrl", auto.ConfigValue("postgresql+psycopg://pc:pw@postgres.data:5432/p", secret=True)
    )
    preview = engine.preview(stack, diff=False, stream=False)
    # Distinct objects: the CLI may print an object's progress line more than once.
    objects = len({m.groups() for m in re.finditer(r"^\s*\+\s+(kubernetes:\S+)\s+(\S+)", preview.stdout, re.M)})
    assert (preview.change_summary or {}).get(auto.OpType.CREATE, 0) > objects > 20, preview.stdout
    yield Env(stack, work_dir, base / "state", bin_dir, env, objects)
    if (stack.export_stack().deployment or {}).get("resources"):
        stack.destroy(color="never")


def _assert_recovered_and_converged(run: Env, recovered: subprocess.CompletedProcess[str]) -> None:
    """After ``recover``: ``up`` converges, a preview plans nothing, and the namespace holds exactly
    the stack's objects, each applied by the stack's field manager alone."""
    assert read_locks(f"file://{run.state}", STACK) == []
    assert "recover: stack local is ready" in recovered.stdout, recovered.stdout + recovered.stderr
    converged = run.run("up")
    assert not VERSION_WARNING.search(converged.stdout + converged.stderr), converged.stdout + converged.stderr
    assert not (run.stack.export_stack().deployment or {}).get("pending_operations")

    preview = engine.preview(run.stack, stream=False)
    assert set(preview.change_summary or {}) == {"same"}, preview.stdout

    recorded = {
        (r["outputs"]["kind"], r["outputs"]["metadata"]["name"])
        for r in run.state_resources()
        if r["type"].startswith("kubernetes:") and r.get("custom") and r["outputs"].get("metadata", {}).get("namespace")
    }
    live = [
        item
        for item in run.kubectl_json("get", KINDS, "-n", NAMESPACE, "--show-managed-fields")["items"]
        if not item["metadata"].get("ownerReferences")  # a CronJob's Jobs, for one
        and (item["kind"], item["metadata"]["name"]) not in CLUSTER_MADE
    ]
    assert {(i["kind"], i["metadata"]["name"]) for i in live} == recorded
    manager = field_manager(STACK)
    for item in live:
        appliers = {m["manager"] for m in item["metadata"].get("managedFields", []) if m["operation"] == "Apply"}
        assert appliers == {manager}, (item["kind"], item["metadata"]["name"], appliers)


@pytest.mark.parametrize("point", ["after the first object", "in the middle", "before the last"])
def test_a_killed_up_recovers_and_converges(setup: Env, point: str) -> None:
    setup.destroyed()
    after = {"after the first object": 1, "in the middle": setup.objects // 2, "before the last": setup.objects - 1}
    setup.kill_after("up", after[point])
    assert read_locks(f"file://{setup.state}", STACK), "the killed run left no lock"
    # What a user meets first: the lock, and the command that repairs it.
    locked = subprocess.run(
        setup.engine("up"), cwd=ROOT, env=setup.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert locked.returncode == 1 and "python -m infra.engine recover --stack local" in locked.stderr

    recovered = setup.run("recover")
    _assert_recovered_and_converged(setup, recovered)


def test_a_killed_destroy_recovers_and_converges_and_recover_waits_for_a_live_run(setup: Env) -> None:
    setup.destroyed()
    # While an `up` runs, its lock is alive: recover refuses and changes nothing.
    running = subprocess.Popen(
        setup.engine("up"), cwd=ROOT, env=setup.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert running.stdout is not None
    try:
        for line in running.stdout:
            if PROGRESS["up"].search(line):
                break
        refused = subprocess.run(
            setup.engine("recover"), cwd=ROOT, env=setup.env, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "still running" in refused.stderr
    finally:
        rest, _ = running.communicate(timeout=COMMAND_TIMEOUT_S)
    assert running.returncode == 0, rest

    setup.kill_after("destroy", setup.objects // 2)
    recovered = setup.run("recover")
    _assert_recovered_and_converged(setup, recovered)
