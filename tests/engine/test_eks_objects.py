"""Every Kubernetes object of the EKS stacks, Karpenter's and the Prometheus Operator's custom
resources included, admitted by a real API server.

The offline tests validate these objects against schemas; here the API server itself decides: the
custom resources against their CRDs (the vendored Karpenter ones and the pinned operator's, with
their CEL rules), strict field validation (``kubectl apply --server-side`` refuses unknown fields)
and Pod Security admission on the namespace's pods. kwok runs no container, so nothing here says a
pod would start; it says the cluster accepts what ``pulumi up`` would send it.
"""

from __future__ import annotations

import copy
import subprocess
from typing import Any

import pytest
import yaml

from infra.naming import PREVIEW_GROUP
from infra.render import kubernetes_manifests
from tests.engine.conftest import Kubectl, get_json
from tests.infra.harness import AWS_STACKS, cached_run
from tests.infra.test_cluster import CRD_DIR as KARPENTER_CRD_DIR
from tests.monitoring.engines import operator_crd_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> None:
    """Karpenter's and the Prometheus Operator's CRDs, as their charts would install them."""
    files = [
        *sorted(KARPENTER_CRD_DIR.glob("karpenter.*.yaml")),
        *sorted(operator_crd_dir().glob("*.yaml")),
    ]
    for path in files:
        kubectl("apply", "--server-side", "-f", str(path))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


def apply(
    kubectl: Kubectl, objects: list[dict[str, Any]], *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return kubectl(
        "apply", "--server-side", "--force-conflicts", *extra, "-f", "-", input=yaml.safe_dump_all(objects), check=check
    )


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_the_api_server_admits_every_object_of_the_stack(
    stack: str, crds: None, kubectl: Kubectl, request: pytest.FixtureRequest
) -> None:
    objects = kubernetes_manifests(cached_run(stack))
    kinds = {o["kind"] for o in objects}
    assert {"NodePool", "EC2NodeClass", "Deployment", "CronJob", "NetworkPolicy"} <= kinds
    # Each stack starts from an empty cluster: the stacks share object names, and some fields
    # (selectors, Job templates) are immutable.
    request.addfinalizer(
        lambda: kubectl("delete", "--ignore-not-found", "--wait", "-f", "-", input=yaml.safe_dump_all(objects))
    )
    apply(kubectl, objects)
    # The preview group (the CI preview role's access entry) reads every object but the Secrets, as the
    # API server evaluates the program's ClusterRole.
    as_preview = ("--as", "ci-preview", "--as-group", PREVIEW_GROUP)
    readable = [o for o in objects if o["kind"] != "Secret"]
    assert len(
        kubectl("get", *as_preview, "-f", "-", "-o", "name", input=yaml.safe_dump_all(readable)).stdout.split()
    ) == len(readable)
    secrets = [o for o in objects if o["kind"] == "Secret"]
    denied = kubectl("get", *as_preview, "-f", "-", input=yaml.safe_dump_all(secrets), check=False)
    assert secrets and denied.returncode != 0 and "forbidden" in denied.stderr, denied.stderr
    pools = {i["metadata"]["name"] for i in get_json(kubectl, "nodepools")["items"]}
    assert {"dask", "general"} <= pools
    if "PrometheusRule" in kinds:
        rules = get_json(kubectl, "prometheusrules", "--all-namespaces")["items"]
        assert rules and all(r["spec"]["groups"] for r in rules)


@pytest.mark.parametrize(
    ("kind", "path", "value", "refusal"),
    [
        ("NodePool", ("spec", "disruption", "consolidationPolicy"), "Sometimes", "consolidationPolicy"),
        ("EC2NodeClass", ("spec", "metadataOptions", "httpPutResponseHopLimit"), 100, "httpPutResponseHopLimit"),
        ("EC2NodeClass", ("spec", "metadataOptions", "httpTokn"), "required", "httpTokn"),  # unknown field
    ],
)
def test_the_api_server_refuses_a_broken_karpenter_object(
    kind: str, path: tuple[str, ...], value: object, refusal: str, crds: None, kubectl: Kubectl
) -> None:
    """The CRDs really validate: the same objects, one field broken, are refused naming the field."""
    obj = copy.deepcopy(next(o for o in kubernetes_manifests(cached_run("dev")) if o["kind"] == kind))
    obj["metadata"]["name"] = "broken"
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    proc = apply(kubectl, [obj], "--dry-run=server", check=False)
    assert proc.returncode != 0 and refusal in proc.stderr, proc.stderr
