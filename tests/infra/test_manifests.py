"""Every Kubernetes object every stack file renders: strict schema validation at the clusters'
Kubernetes version (custom resources against their own CRDs) and a checkov scan.

The manifests come from :func:`infra.render.render_run` on the same mock runs the program tests use,
i.e. exactly what ``python -m infra render`` writes. Both checks also run on a known-bad canary so
a scanner that silently scans nothing cannot pass the suite.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from infra.aws.karpenter import NODE_CLASS_API, NODE_POOL_API
from infra.render import K8S_DIR, kubernetes_manifests, render_run
from infra.schema import DEFAULT_CLUSTER_VERSION
from tests.infra.harness import STACKS, cached_run
from tests.infra.test_cluster import validate_custom_resource as validate_karpenter_resource
from tests.monitoring.crds import is_prometheus_operator_object, validate_custom_resource

KUBERNETES_VERSION = DEFAULT_CLUSTER_VERSION
SKIPS_FILE = Path(__file__).resolve().parents[2] / "infra" / "checkov-skips.yaml"


def validate_strict(obj: dict[str, Any]) -> None:
    """Strict schema validation; an API version the schema set lacks (removed) is an error too.

    The ``kubernetes-validate`` CLI only *warns* on a missing schema; through the Python API the
    :class:`SchemaNotFoundError` is raised and turned into a failure here.
    """
    if is_prometheus_operator_object(obj):  # custom resources: the operator's own CRD schemas
        validate_custom_resource(obj)
        return
    if obj["apiVersion"] in (NODE_POOL_API, NODE_CLASS_API):  # Karpenter's own CRD schemas
        validate_karpenter_resource(obj)
        return
    try:
        kv.validate(obj, KUBERNETES_VERSION, strict=True)
    except kv.SchemaNotFoundError as exc:
        raise AssertionError(exc.message) from None
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}") from None


def checkov_skips() -> list[dict[str, str]]:
    return list(yaml.safe_load(SKIPS_FILE.read_text())["skips"])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("manifests")
    for stack in STACKS:
        render_run(cached_run(stack), root / "stacks" / stack)
    return root


# ------------------------------------------------------------------ schema


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_validates_strictly_against_the_cluster_version(stack: str, rendered: Path) -> None:
    files = sorted((rendered / "stacks" / stack / K8S_DIR).glob("*.yaml"))
    assert len(files) >= 26
    for path in files:
        validate_strict(yaml.safe_load(path.read_text()))


def test_the_validator_schema_is_the_clusters_and_strict() -> None:
    obj = kubernetes_manifests(cached_run("dev"))[0]
    assert kv.validate(obj, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_strict_validation_rejects_unknown_fields() -> None:
    deployment = next(o for o in kubernetes_manifests(cached_run("dev")) if o["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolicyy"):
        validate_strict(bad)


def test_strict_validation_rejects_removed_api_versions() -> None:
    cron = next(o for o in kubernetes_manifests(cached_run("dev")) if o["kind"] == "CronJob")
    old = copy.deepcopy(cron) | {"apiVersion": "batch/v1beta1"}  # removed in Kubernetes 1.25
    with pytest.raises(AssertionError, match="Couldn't find schema"):
        validate_strict(old)


# ------------------------------------------------------------------ checkov


def test_every_checkov_skip_has_a_reason() -> None:
    skips = checkov_skips()
    ids = [s["id"] for s in skips]
    assert len(ids) == len(set(ids))
    for skip in skips:
        assert skip["id"].startswith(("CKV_K8S_", "CKV2_K8S_")), skip
        assert len(skip.get("reason", "").split()) >= 10, f"{skip['id']} needs a real reason"


CANARY = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "canary", "namespace": "canary"},
    "spec": {"containers": [{"name": "c", "image": "busybox:latest", "securityContext": {"privileged": True}}]},
}


@pytest.mark.slow
def test_checkov_reports_no_failed_check_on_any_stack(rendered: Path) -> None:
    canary = rendered / "canary"
    canary.mkdir(exist_ok=True)
    (canary / "pod.yaml").write_text(yaml.safe_dump(CANARY))
    skip_ids = ",".join(s["id"] for s in checkov_skips())
    skip_args = ["--skip-check", skip_ids] if skip_ids else []
    env = os.environ | {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkov.main",
            "--directory",
            str(rendered),
            "--framework",
            "kubernetes",
            "--skip-download",
            *skip_args,
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.stdout, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    failed = report["results"]["failed_checks"]
    by_place: dict[str, list[str]] = {}
    for check in failed:
        by_place.setdefault(check["file_path"].lstrip("/").split("/")[0], []).append(
            f"{check['check_id']} {check['resource']} ({check['file_path']})"
        )
    assert by_place.pop("canary", []), "the canary must fail: is checkov scanning anything?"
    assert by_place == {}, "\n".join(line for lines in by_place.values() for line in lines)
    places = [c["file_path"].lstrip("/").split("/") for c in report["results"]["passed_checks"]]
    scanned = {parts[1] for parts in places if parts[0] == "stacks"}
    assert scanned == set(STACKS)
    # Secrets reach the pods as files: the check runs (it is not skipped) and passes on every stack.
    secrets_as_files = {
        c["file_path"].lstrip("/").split("/")[1]
        for c in report["results"]["passed_checks"]
        if c["check_id"] == "CKV_K8S_35" and c["file_path"].lstrip("/").startswith("stacks/")
    }
    assert secrets_as_files == set(STACKS)
    assert report["summary"]["parsing_errors"] == 0
