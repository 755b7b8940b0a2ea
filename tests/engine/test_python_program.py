"""The real Python program, through the real Pulumi CLI, engine and Kubernetes provider, against a
local control plane.

:mod:`infra.engine` runs :func:`infra.program.main` as an Automation API inline program (the SDK
serves the language-host protocol in this process; no ``pulumi-language-python`` is needed). The
stack is ``local``, from a work directory holding ``Pulumi.yaml`` and ``Pulumi.local.yaml``: the
registry is a real one on 127.0.0.1 holding two real images, the digests are recorded with
``python -m infra promote`` and the secrets are encrypted into the stack file by the passphrase
provider. State sits in a file backend; no plugin is downloaded, no update check is made.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from infra import engine
from infra.mockrun import run_stack
from infra.naming import PREVIEW_GROUP, PREVIEW_REFRESH_EXCLUDES
from infra.render import is_kubernetes_object
from tests.engine.conftest import ROOT, ControlPlane, build_tools
from tests.support.registry import build_and_push_image, registry_server

pytestmark = pytest.mark.slow

STACK = "local"
PROJECT = "purchase-classifier"
NAMESPACE = "purchase-classifier"
SECRETS = {
    "databaseUrl": "postgresql+psycopg://pc:db-password-never-in-state@postgres.data:5432/purchases",
    "storageAccessKeyId": "access-key-never-in-state",
    "storageSecretAccessKey": "secret-key-never-in-state",
}
"""The stack's secret config, set as ``pulumi config set --secret`` would."""
UP_BOUND_S = 600
"""A hang guard, not a performance target: the provider waits up to 10 min for a rollout by default."""
WORKLOADS_WITH_IMAGE = {
    "kubernetes:apps/v1:Deployment::serving",
    "kubernetes:apps/v1:Deployment::dask-scheduler",
    "kubernetes:apps/v1:Deployment::dask-workers",
    "kubernetes:batch/v1:CronJob::jobs-refresh",
    "kubernetes:batch/v1:CronJob::jobs-train",
    "kubernetes:batch/v1:CronJob::jobs-predict",
}
IMAGE_BOUND = re.compile(
    r"spec\.(jobTemplate\.spec\.)?template\.spec\.containers\[\d+\]\.(image|env\[0\]\.value)"
    r"|spec\.(jobTemplate\.spec\.template|jobTemplate|template)\.metadata\.labels\[\"app\.kubernetes\.io/version\"\]"
)
"""What a new digest may change on a workload: the image, the ML_IMAGE_DIGEST variable (first in
every container's env) and the version label of the pods (and of a CronJob's Jobs)."""


@dataclass
class Deployed:
    stack: auto.Stack
    work_dir: Path
    state: Path
    digests: tuple[str, str]
    """The image recorded first, and the one a promotion brings."""
    declared: dict[str, dict[str, Any]]
    """The offline run's Kubernetes objects (same stack file, same secrets), by ``<type>::<name>``."""
    up_seconds: float
    env: dict[str, str]
    credential: Path
    """The ExecCredential the stack's kubeconfig reads at each run: whose identity the provider uses."""

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", *args], env=self.env, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def promote(self, digest: str) -> None:
        """``python -m infra promote --digest`` on the work directory's stack file (checks the registry)."""
        subprocess.run(
            [sys.executable, "-m", "infra", "promote", "--digest", digest, "--to", STACK, "--root", str(self.work_dir)],
            check=True,
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )

    def state_resources(self) -> list[dict[str, Any]]:
        return list((self.stack.export_stack().deployment or {}).get("resources") or [])

    def resource_versions(self) -> dict[str, str]:
        items = self.get("deployments,cronjobs,jobs,services,configmaps,secrets", "-n", NAMESPACE)["items"]
        return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def admin_token(control_plane: ControlPlane) -> str:
    return str(yaml.safe_load(control_plane.kubeconfig.read_text())["users"][0]["user"]["token"])


def exec_credential(token: str) -> str:
    return json.dumps(
        {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {"token": token}}
    )


def exec_kubeconfig(control_plane: ControlPlane, credential: Path) -> str:
    """The control plane's kubeconfig with the user's token read from ``credential`` at each run, as EKS
    kubeconfigs run ``aws eks get-token``: the identity comes from outside the state."""
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    for user in kubeconfig["users"]:
        user["user"] = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "cat",
                "args": [str(credential)],
                "interactiveMode": "Never",
            }
        }
    return yaml.safe_dump(kubeconfig)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with registry_server(tmp_path_factory.mktemp("registry")) as host:
        yield host


@pytest.fixture(scope="module")
def deployed(
    control_plane: ControlPlane, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    base = tmp_path_factory.mktemp("python-program")
    work_dir = base / "project"
    work_dir.mkdir()
    for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
        shutil.copy(ROOT / name, work_dir / name)
    (work_dir / "infra").symlink_to(ROOT / "infra")  # Pulumi.yaml's `main`; the CLI checks it exists
    (base / "state").mkdir()
    env = {**control_plane.env(), "PULUMI_HOME": str(base / "home"), "PULUMI_CONFIG_PASSPHRASE": "engine-tests"}
    stack = engine.open_stack(
        STACK, work_dir=work_dir, bin_dir=build_tools(), backend=f"file://{base / 'state'}", env=env
    )
    repository = f"{registry}/{PROJECT}"
    stack.set_config(f"{PROJECT}:registry", auto.ConfigValue(repository))
    stack.set_config(f"{PROJECT}:cluster.context", auto.ConfigValue("local"), path=True)
    credential = base / "credential.json"
    credential.write_text(exec_credential(admin_token(control_plane)))
    secrets = {**SECRETS, "kubeconfig": exec_kubeconfig(control_plane, credential)}
    for key, value in secrets.items():
        stack.set_config(f"{PROJECT}:{key}", auto.ConfigValue(value, secret=True))
    first, promoted = (build_and_push_image(registry, PROJECT, content=f"build {n}\n".encode()).digest for n in (1, 2))
    run = Deployed(stack, work_dir, base / "state", (first, promoted), {}, 0.0, env, credential)
    run.promote(first)
    offline = run_stack(STACK, secrets=secrets, root=work_dir)
    run.declared = {f"{r.type}::{r.name}": r.inputs for r in offline.resources if is_kubernetes_object(r)}

    preview = engine.preview(stack, stream=False)
    # Every resource the offline run registered, and the root stack (which it does not capture).
    assert preview.change_summary == {"create": len(offline.resources) + 1}, preview.stdout
    started = time.monotonic()
    engine.up(stack, stream=False)
    run.up_seconds = time.monotonic() - started
    yield run
    stack.destroy()


def _kubectl_kind(obj: dict[str, Any]) -> str:
    group = obj["apiVersion"].rpartition("/")[0]
    return f"{obj['kind'].lower()}.{group}" if group else obj["kind"].lower()


def test_up_creates_every_object_the_offline_run_declares(deployed: Deployed) -> None:
    assert deployed.up_seconds < UP_BOUND_S
    state = deployed.state_resources()
    managed = {engine.resource_key(r["urn"]) for r in state if r["type"].startswith("kubernetes:") and r["custom"]}
    assert managed == set(deployed.declared)
    for key, declared in deployed.declared.items():
        meta = declared["metadata"]
        namespace = ["-n", meta["namespace"]] if "namespace" in meta else []
        live = deployed.get(f"{_kubectl_kind(declared)}/{meta['name']}", *namespace)
        assert live["kind"] == declared["kind"], key
        assert live["metadata"].get("labels", {}).items() >= (meta.get("labels") or {}).items(), key


def test_every_pod_was_admitted_under_restricted_and_the_workloads_rolled_out(deployed: Deployed) -> None:
    labels = deployed.get(f"namespace/{NAMESPACE}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    image = f"{deployed.stack.get_config(f'{PROJECT}:registry').value}@{deployed.digests[0]}"
    # Every pod of every workload exists, so Pod Security admission let it in; all run the digest.
    pods = deployed.get("pods", "-n", NAMESPACE)["items"]
    assert {p["metadata"]["labels"].get("job-name") for p in pods} >= {"bootstrap-refresh", "bootstrap-train"}
    assert all(c["image"] == image for pod in pods for c in pod["spec"]["containers"])
    for deployment in deployed.get("deployments", "-n", NAMESPACE)["items"]:
        status = deployment["status"]
        available = [c for c in status["conditions"] if c["type"] == "Available"]
        assert available and available[0]["status"] == "True", deployment["metadata"]["name"]
        assert status.get("readyReplicas") == deployment["spec"]["replicas"], deployment["metadata"]["name"]
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        ready = deployed.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
        assert len(ready) == deployment["spec"]["replicas"], deployment["metadata"]["name"]
    assert {c["metadata"]["name"] for c in deployed.get("cronjobs", "-n", NAMESPACE)["items"]} == {
        "refresh",
        "train",
        "predict",
    }
    # The enforcement is live: a root pod is refused in the namespace the program made.
    refused = deployed.kubectl(
        "run", "root-pod", "-n", NAMESPACE, "--image", image, "--dry-run=server", "--overrides",
        json.dumps({"spec": {"securityContext": {"runAsUser": 0}}}), check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "restricted" in refused.stderr


def test_the_first_deploy_trains_before_the_serving_deployment_exists(deployed: Deployed) -> None:
    # kwok completes a Job at once; what this shows is the engine's order: the serving Deployment
    # (whose pods are ready only with a model) was created after the training run completed.
    refresh = deployed.get("job/bootstrap-refresh", "-n", NAMESPACE)["status"]
    train = deployed.get("job/bootstrap-train", "-n", NAMESPACE)
    serving = deployed.get("deployment/serving", "-n", NAMESPACE)["metadata"]["creationTimestamp"]
    assert refresh["completionTime"] <= train["metadata"]["creationTimestamp"]
    assert train["status"]["completionTime"] <= serving


def test_a_second_up_changes_nothing(deployed: Deployed) -> None:
    result = engine.up(deployed.stack, stream=False)
    assert result.summary.resource_changes == {"same": len(deployed.state_resources())}


def test_the_hpa_scaling_the_serving_deployment_is_not_undone(deployed: Deployed) -> None:
    deployed.kubectl(
        "patch", "deployment/serving", "-n", NAMESPACE, "--subresource", "scale", "--type", "merge",
        "-p", '{"spec": {"replicas": 2}}',
    )  # fmt: skip
    result = engine.up(deployed.stack, stream=False, refresh=True)
    assert set(result.summary.resource_changes or {}) == {"same"}, result.stdout
    assert deployed.get("deployment/serving", "-n", NAMESPACE)["spec"]["replicas"] == 2


def test_a_promotion_previews_as_the_image_change_on_the_image_workloads_only(deployed: Deployed) -> None:
    first, promoted = deployed.digests
    deployed.promote(promoted)
    try:
        steps = engine.planned_steps(deployed.stack)
        summary = {key: (step["op"], sorted(step.get("detailedDiff") or {})) for key, step in steps.items()}
        assert set(steps) == WORKLOADS_WITH_IMAGE, summary
        for key, step in steps.items():
            assert step["op"] == "update", key
            changed = set(step["detailedDiff"])
            assert any(path.endswith(".image") for path in changed), (key, changed)
            assert all(IMAGE_BOUND.fullmatch(path) for path in changed), (key, changed)
        preview = engine.preview(deployed.stack, stream=False)
        assert preview.change_summary == {
            "update": 6,
            "same": len(deployed.state_resources()) - 6,
        }
        assert f"@{first}" in preview.stdout and f"@{promoted}" in preview.stdout
    finally:
        deployed.promote(first)


def test_a_schedule_change_previews_as_that_cronjob_schedule_only(deployed: Deployed) -> None:
    stack_file = deployed.work_dir / f"Pulumi.{STACK}.yaml"
    original = stack_file.read_text()
    stack_file.write_text(original.replace('schedule: "0 3 * * *"', 'schedule: "15 3 * * *"'))
    try:
        steps = engine.planned_steps(deployed.stack)
        assert {key: set(step["detailedDiff"]) for key, step in steps.items()} == {
            "kubernetes:batch/v1:CronJob::jobs-train": {"spec.schedule"}
        }
        assert '~ schedule: "0 3 * * *" => "15 3 * * *"' in engine.preview(deployed.stack, stream=False).stdout
    finally:
        stack_file.write_text(original)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("imageDigest", "sha256:abc", "purchase-classifier:imageDigest: got 'sha256:abc'"),
        ("workloads.serving.replicas", "0", "purchase-classifier:workloads.serving.replicas: got 0"),
    ],
)
def test_a_bad_config_value_fails_the_engine_naming_the_key_before_any_change(
    deployed: Deployed, key: str, value: str, message: str
) -> None:
    stack_file = deployed.work_dir / f"Pulumi.{STACK}.yaml"
    original = stack_file.read_text()
    before = deployed.resource_versions()
    deployed.stack.set_config(f"{PROJECT}:{key}", auto.ConfigValue(value), path=True)
    try:
        with pytest.raises(auto.CommandError) as failed:
            engine.up(deployed.stack, stream=False)
        assert message in str(failed.value)
    finally:
        stack_file.write_text(original)
    assert deployed.resource_versions() == before
    assert engine.planned_steps(deployed.stack) == {}


def test_secrets_stay_encrypted_in_the_stack_file_and_the_state(deployed: Deployed) -> None:
    stack_file = (deployed.work_dir / f"Pulumi.{STACK}.yaml").read_text()
    state = "\n".join(p.read_text() for p in deployed.state.rglob("*.json"))
    assert state
    for text in (stack_file, state):
        assert "never-in-state" not in text
        assert str(deployed.credential) not in text  # in the kubeconfig, a secret too
    # They were deployed all the same: the Secrets hold them.
    deployed_values = "\n".join(
        base64.b64decode(value).decode()
        for secret in deployed.get("secrets", "-n", NAMESPACE)["items"]
        for value in (secret.get("data") or {}).values()
    )
    for value in SECRETS.values():
        assert value in deployed_values


def test_the_command_line_previews_the_deployed_stack_as_unchanged(deployed: Deployed) -> None:
    args = ["--stack", STACK, "--work-dir", str(deployed.work_dir), "--backend", f"file://{deployed.state}"]
    proc = subprocess.run(
        [sys.executable, "-m", "infra.engine", "preview", *args],
        cwd=ROOT,
        env=deployed.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(deployed.state_resources())} unchanged" in proc.stdout


def test_the_preview_group_refreshes_all_but_secrets_and_sees_drift_without_reading_a_secret(
    deployed: Deployed, control_plane: ControlPlane
) -> None:
    """What a pull-request preview and the drift check can do as the ``ci-preview`` role, whose access
    entry maps it to the preview group: read every object the stack manages but no Secret, and still
    see a change made outside Pulumi. The provider's credential is swapped for the preview token, as
    the job's AWS role would be on EKS; the state and the config stay as they are."""
    token = (control_plane.dir / "preview-token").read_text().strip()
    whoami = json.loads(deployed.kubectl("--token", token, "auth", "whoami", "-o", "json").stdout)
    assert PREVIEW_GROUP in whoami["status"]["userInfo"]["groups"]
    denied = deployed.kubectl("--token", token, "get", "secret", "-n", NAMESPACE, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr, denied.stderr

    deployed.credential.write_text(exec_credential(token))
    exclude = list(PREVIEW_REFRESH_EXCLUDES)
    try:
        assert _changes(deployed.stack.preview(json=True, color="never").stdout) == {}  # a pull request's
        with pytest.raises(auto.CommandError, match="forbidden"):  # a refresh that reads a Secret is refused
            deployed.stack.preview(refresh=True, color="never")
        deployed.stack.preview(refresh=True, exclude=exclude, expect_no_changes=True, color="never")  # the drift check
        deployed.kubectl("delete", "networkpolicy", "default-deny", "-n", NAMESPACE)  # by hand, as admin
        drift = deployed.stack.preview(refresh=True, exclude=exclude, json=True, color="never")
        assert _changes(drift.stdout) == {
            "kubernetes:networking.k8s.io/v1:NetworkPolicy::namespace-default-deny": "create"
        }
    finally:
        deployed.credential.write_text(exec_credential(admin_token(control_plane)))
        engine.up(deployed.stack, refresh=True, stream=False)
    assert deployed.get("networkpolicy", "default-deny", "-n", NAMESPACE)


def _changes(preview_json: str) -> dict[str, str]:
    """``<type>::<name>`` -> operation of each step of ``pulumi preview --json`` that changes something."""
    steps = json.loads(preview_json).get("steps", [])
    return {engine.resource_key(s["urn"]): s["op"] for s in steps if s["op"] not in ("same", "refresh")}


def test_destroy_removes_everything_namespace_included(deployed: Deployed) -> None:
    resources = len(deployed.state_resources())
    result = deployed.stack.destroy()
    assert result.summary.resource_changes == {"delete": resources}
    assert deployed.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0
    assert deployed.state_resources() == []
