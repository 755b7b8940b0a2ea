"""The offline render of the ``local`` stack, server-side applied to the real control plane.

This is what the API server makes of the manifests the program declares: every object is accepted
with the spec the render shows, the namespace's Pod Security ``restricted`` level admits every pod
(and refuses one that breaks it), Deployments become Available, CronJobs exist and a Job made from
one runs to completion, and applying the same manifests again changes nothing.

kwok marks scheduled pods Ready without running their probes, so nothing here says a readiness
probe would pass: only that the API server admitted, scheduled and rolled out what was declared.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.render import REDACTED, render
from tests.engine.conftest import Kubectl, get_json

pytestmark = pytest.mark.slow

DIGEST = "sha256:" + "ab" * 32


def _subset_mismatches(rendered: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``live`` lacks or differs from a value ``rendered`` sets (defaults may be added)."""
    if isinstance(rendered, dict):
        if not isinstance(live, dict):
            return [f"{path}: expected a mapping, got {live!r}"]
        return [m for k, v in rendered.items() for m in _subset_mismatches(v, live.get(k), f"{path}.{k}")]
    if isinstance(rendered, list):
        if not isinstance(live, list) or len(live) != len(rendered):
            return [f"{path}: expected {rendered!r}, got {live!r}"]
        pairs = enumerate(zip(rendered, live, strict=True))
        return [m for i, (r, v) in pairs for m in _subset_mismatches(r, v, f"{path}[{i}]")]
    if rendered == live or str(rendered) == str(live) or _quantity(rendered) == _quantity(live) is not None:
        return []
    return [f"{path}: expected {rendered!r}, got {live!r}"]


_SUFFIXES: dict[str, int | Fraction] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "m": Fraction(1, 1000),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
}


def _quantity(value: Any) -> Fraction | None:
    """A resource quantity's value: the API server writes ``4096Mi`` back as ``4Gi``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    if match is None or match[2] not in {"", *_SUFFIXES}:
        return None
    return Fraction(match[1]) * _SUFFIXES.get(match[2], 1)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("render")
    result = render("local", out, image_digest=DIGEST)
    return out / "k8s", result.objects


@pytest.fixture(scope="module")
def applied(kubectl: Kubectl, rendered: tuple[Path, list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    k8s_dir, objects = rendered
    kubectl("apply", "--server-side", "--field-manager", "render", "-f", str(k8s_dir))
    yield objects
    namespace = objects[0]["metadata"]["name"]
    # Waits for the namespace controller, so later tests may create the namespace afresh.
    kubectl("delete", "namespace", namespace, "--timeout", "180s")


def _ref(obj: dict[str, Any]) -> list[str]:
    meta = obj["metadata"]
    ns = ["-n", meta["namespace"]] if "namespace" in meta else []
    return [obj["kind"].lower(), meta["name"], *ns]


def test_every_rendered_object_exists_with_the_rendered_spec(kubectl: Kubectl, applied: list[dict[str, Any]]) -> None:
    assert [o["kind"] for o in applied].count("Deployment") >= 3
    problems = []
    for obj in applied:
        live = get_json(kubectl, *_ref(obj))
        expected = {k: v for k, v in obj.items() if k not in ("apiVersion", "stringData", "data")}
        problems += [f"{obj['kind']}/{obj['metadata']['name']}{m}" for m in _subset_mismatches(expected, live)]
    assert problems == []


def test_secret_values_are_applied_as_given(kubectl: Kubectl, applied: list[dict[str, Any]]) -> None:
    for obj in (o for o in applied if o["kind"] == "Secret"):
        live = get_json(kubectl, *_ref(obj))
        assert {k: base64.b64decode(v).decode() for k, v in live["data"].items()} == dict.fromkeys(
            obj["stringData"], REDACTED
        )


def test_deployments_become_available_and_their_pods_were_admitted_as_restricted(
    kubectl: Kubectl, applied: list[dict[str, Any]]
) -> None:
    namespace = applied[0]["metadata"]["name"]
    labels = get_json(kubectl, "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    kubectl("wait", "--for", "condition=Available", "deployment", "--all", "-n", namespace, "--timeout", "180s")
    deployments = [o["metadata"]["name"] for o in applied if o["kind"] == "Deployment"]
    pods = get_json(kubectl, "pods", "-n", namespace)["items"]
    owners = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    assert set(deployments) <= owners, f"pods ran for {owners}, expected every one of {deployments}"
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert pod["spec"]["containers"][0]["image"].endswith("@" + DIGEST)


def test_the_namespace_refuses_a_pod_that_breaks_the_restricted_level(
    kubectl: Kubectl, applied: list[dict[str, Any]]
) -> None:
    namespace = applied[0]["metadata"]["name"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unrestricted", "namespace": namespace},
        # Fine under "baseline"; "restricted" wants non-root, no privilege escalation, all
        # capabilities dropped and a seccomp profile.
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    proc = kubectl("apply", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:' in proc.stderr


def test_cronjobs_exist_and_a_job_made_from_one_completes(kubectl: Kubectl, applied: list[dict[str, Any]]) -> None:
    namespace = applied[0]["metadata"]["name"]
    cronjobs = sorted(o["metadata"]["name"] for o in applied if o["kind"] == "CronJob")
    live = sorted(c["metadata"]["name"] for c in get_json(kubectl, "cronjobs", "-n", namespace)["items"])
    assert live == cronjobs
    assert "train" in cronjobs
    kubectl("create", "job", "train-now", "--from", "cronjob/train", "-n", namespace)
    kubectl("wait", "--for", "condition=Complete", "job/train-now", "-n", namespace, "--timeout", "180s")


def test_applying_the_same_manifests_again_changes_nothing(
    kubectl: Kubectl, rendered: tuple[Path, list[dict[str, Any]]], applied: list[dict[str, Any]]
) -> None:
    k8s_dir, _ = rendered
    diff = kubectl("diff", "--server-side", "--field-manager", "render", "-f", str(k8s_dir), check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
