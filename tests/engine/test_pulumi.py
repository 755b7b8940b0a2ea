"""The real Pulumi CLI and Kubernetes provider against the local control plane.

The Go module proxy does not serve the Python language host, so the CLI runs the YAML program that
``engine/yaml_program.py`` makes from one offline run of the Python program for the ``local`` stack
(the same objects, dependencies, ``ignoreChanges`` and secrets). State sits in a local file backend
with a passphrase secrets provider; no plugin is downloaded, no update check is made.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.promote import set_digest
from tests.engine.conftest import ROOT, ControlPlane, Kubectl, build_tools, get_json

pytestmark = pytest.mark.slow

STACK = "local"
NAMESPACE = "purchase-classifier"
FIRST = "sha256:" + "1" * 64
PROMOTED = "sha256:" + "2" * 64
SECRETS = {
    "databaseUrl": "postgresql+psycopg://pc:db-password-never-in-state@postgres.data:5432/purchases",
    "storageAccessKeyId": "access-key-never-in-state",
    "storageSecretAccessKey": "secret-key-never-in-state",
}
"""The stack's secret config, as `pulumi config set --secret` would hold it."""
IMAGE_BOUND = re.compile(
    r"spec\.(jobTemplate\.spec\.)?template\.spec\.containers\[\d+\]\.(image|env\[0\]\.value)"
    r"|spec\.(jobTemplate\.spec\.template|jobTemplate|template)\.metadata\.labels\[\"app\.kubernetes\.io/version\"\]"
)
"""What a new digest may change on a workload: the image, the ML_IMAGE_DIGEST variable (first in
every container's env) and the version label of the pods (and of a CronJob's Jobs)."""
WORKLOADS_WITH_IMAGE = {
    "deployment-serving",
    "deployment-dask-scheduler",
    "deployment-dask-worker",
    "cronjob-refresh",
    "cronjob-train",
    "cronjob-predict",
}


@dataclass
class Project:
    """A copy of the stack files (so promotions stay out of the repository) and its YAML program."""

    root: Path
    program: Path
    state: Path
    env: dict[str, str]

    def write(self) -> None:
        args = ["--stack", STACK, "--root", str(self.root), "--out", str(self.program)]
        for key, value in SECRETS.items():
            args += ["--secret", f"{key}={value}"]
        subprocess.run(
            [sys.executable, str(ROOT / "engine" / "yaml_program.py"), *args],
            check=True,
            capture_output=True,
            timeout=300,
        )

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["pulumi", *args, "--stack", STACK, "--non-interactive", "--color", "never"],
            cwd=self.program,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def steps(self) -> dict[str, dict[str, Any]]:
        """``pulumi preview --json`` steps that change something, by resource name."""
        out = json.loads(self.pulumi("preview", "--json").stdout)
        return {s["urn"].rsplit("::", 1)[1]: s for s in out.get("steps", []) if s["op"] != "same"}


@pytest.fixture(scope="module")
def pulumi_bin(control_plane: ControlPlane) -> Path:
    return build_tools()


@pytest.fixture(scope="module")
def project(
    pulumi_bin: Path, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("pulumi")
    root = base / "root"
    root.mkdir()
    for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
        shutil.copy(ROOT / name, root / name)
    set_digest(STACK, FIRST, root=root)
    (base / "state").mkdir()
    env = {
        **os.environ,
        "PATH": f"{pulumi_bin}:{os.environ['PATH']}",
        "PULUMI_HOME": str(base / "home"),
        "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "engine-tests",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    proj = Project(root, base / "program", base / "state", env)
    proj.write()
    proj.pulumi("stack", "init")
    proj.pulumi("config", "set", "--secret", "kubeconfig", control_plane.kubeconfig.read_text())
    yield proj
    proj.pulumi("destroy", "--yes", check=False)


@pytest.fixture(scope="module")
def deployed(project: Project) -> Project:
    preview = project.pulumi("preview", "--diff")
    assert "+ kubernetes:apps/v1:Deployment" in preview.stdout
    project.pulumi("up", "--yes", "--skip-preview")
    return project


def test_up_creates_every_declared_object_and_the_workloads_roll_out(deployed: Project, kubectl: Kubectl) -> None:
    resources = yaml.safe_load((deployed.program / "Pulumi.yaml").read_text())["resources"]
    declared = [r for r in resources.values() if r["type"].startswith("kubernetes:")]
    assert len(declared) > 20
    for resource in declared:
        kind = resource["type"].rsplit(":", 1)[1].lower()
        meta = resource["properties"]["metadata"]
        namespace = ["-n", meta["namespace"]] if "namespace" in meta else []
        assert get_json(kubectl, f"{kind}/{meta['name']}", *namespace)["metadata"]["name"] == meta["name"]
    # pulumi-kubernetes waited for each Deployment to become available before `up` returned.
    for deployment in get_json(kubectl, "deployments", "-n", NAMESPACE)["items"]:
        available = [c for c in deployment["status"]["conditions"] if c["type"] == "Available"]
        assert available and available[0]["status"] == "True", deployment["metadata"]["name"]


def test_the_first_deploy_trains_before_the_serving_deployment_exists(deployed: Project, kubectl: Kubectl) -> None:
    # kwok completes the Job at once; what this shows is the engine's order: the serving Deployment
    # (whose pods are ready only with a model) was created after the training run completed.
    refresh = get_json(kubectl, "job/bootstrap-refresh", "-n", NAMESPACE)["status"]
    train = get_json(kubectl, "job/bootstrap-train", "-n", NAMESPACE)
    serving = get_json(kubectl, "deployment/serving", "-n", NAMESPACE)["metadata"]["creationTimestamp"]
    assert refresh["completionTime"] <= train["metadata"]["creationTimestamp"]
    assert train["status"]["completionTime"] <= serving


def test_a_second_up_changes_nothing(deployed: Project) -> None:
    deployed.pulumi("up", "--yes", "--expect-no-changes")


def test_an_hpa_scaling_the_deployment_is_not_undone(deployed: Project, kubectl: Kubectl) -> None:
    kubectl("scale", "deployment/serving", "-n", NAMESPACE, "--replicas", "2")
    deployed.pulumi("preview", "--refresh", "--expect-no-changes")
    deployed.pulumi("up", "--yes", "--refresh")
    assert get_json(kubectl, "deployment/serving", "-n", NAMESPACE)["spec"]["replicas"] == 2


def test_state_holds_no_secret_in_plain_text(deployed: Project, kubectl: Kubectl) -> None:
    state = "\n".join(p.read_text() for p in deployed.state.rglob("*.json"))
    assert state
    assert "never-in-state" not in state
    assert "token:" not in state  # the kubeconfig's admin token
    # They were deployed all the same: the Secrets hold them.
    deployed_values = "\n".join(
        base64.b64decode(value).decode()
        for secret in get_json(kubectl, "secrets", "-n", NAMESPACE)["items"]
        for value in (secret.get("data") or {}).values()
    )
    for value in SECRETS.values():
        assert value in deployed_values


def test_a_promotion_previews_as_the_image_change_on_the_image_workloads_only(deployed: Project) -> None:
    set_digest(STACK, PROMOTED, root=deployed.root)
    deployed.write()
    try:
        steps = deployed.steps()
        summary = {name: (step["op"], sorted(step.get("detailedDiff") or {})) for name, step in steps.items()}
        assert set(steps) == WORKLOADS_WITH_IMAGE, summary
        for name, step in steps.items():
            assert step["op"] == "update", name
            changed = set(step.get("detailedDiff") or {})
            assert any(path.endswith(".image") for path in changed), (name, changed)
            assert all(IMAGE_BOUND.fullmatch(path) for path in changed), (name, changed)
        text = deployed.pulumi("preview", "--diff").stdout
        assert f"@{PROMOTED}" in text and f"@{FIRST}" in text
    finally:
        set_digest(STACK, FIRST, root=deployed.root)
        deployed.write()


def test_a_schedule_change_previews_as_that_cronjob_schedule_only(deployed: Project) -> None:
    stack_file = deployed.root / f"Pulumi.{STACK}.yaml"
    original = stack_file.read_text()
    stack_file.write_text(original.replace('schedule: "0 3 * * *"', 'schedule: "15 3 * * *"'))
    deployed.write()
    try:
        steps = deployed.steps()
        assert set(steps) == {"cronjob-train"}
        assert set(steps["cronjob-train"]["detailedDiff"]) == {"spec.schedule"}
    finally:
        stack_file.write_text(original)
        deployed.write()


def test_destroy_removes_everything_namespace_included(deployed: Project, kubectl: Kubectl) -> None:
    deployed.pulumi("destroy", "--yes")
    assert kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0
