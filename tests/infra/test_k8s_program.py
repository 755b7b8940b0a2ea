"""The Kubernetes workloads as the whole program declares them, per stack file, under Pulumi mocks."""

from __future__ import annotations

import runpy
from collections import Counter
from pathlib import Path

import pulumi
import pytest

from infra.config import ConfigError, parse_config
from infra.mockrun import ROOT, SECRET_SIG, CapturedResource, StackRun, load_stack_config, run_program, run_stack
from infra.naming import IDENTITY_WORKLOADS, SERVICE_ACCOUNTS
from tests.infra.harness import DIGEST, STACKS, cached_run

K8S_COMPONENTS = {
    "purchase-classifier:k8s:Workloads",
    "purchase-classifier:k8s:Namespace",
    "purchase-classifier:k8s:DaskCluster",
    "purchase-classifier:k8s:Serving",
    "purchase-classifier:k8s:Jobs",
    "purchase-classifier:k8s:Bootstrap",
    "purchase-classifier:k8s:PreviewAccess",
}
OPTIONAL_K8S_COMPONENTS = {"purchase-classifier:k8s:Monitoring"}
"""Declared only where the stack enables them (tests/infra/test_monitoring.py checks which)."""
EXPECTED_KINDS = {
    "kubernetes:core/v1:Namespace": 1,
    "kubernetes:core/v1:ServiceAccount": len(SERVICE_ACCOUNTS),
    "kubernetes:core/v1:Secret": 1,
    "kubernetes:core/v1:Service": 2,
    "kubernetes:apps/v1:Deployment": 3,
    "kubernetes:batch/v1:CronJob": 3,
    "kubernetes:batch/v1:Job": 2,
    "kubernetes:policy/v1:PodDisruptionBudget": 3,  # Dask scheduler, Dask workers, serving
    "kubernetes:networking.k8s.io/v1:NetworkPolicy": 8,
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole": 1,  # the preview group's read access
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding": 1,
}


PLATFORM_COMPONENTS = ("aws:Karpenter", "k8s:PrometheusStack")


def k8s_objects(run: StackRun) -> list[CapturedResource]:
    """The workloads' objects (the platform's own, Karpenter's and the Prometheus Operator stack's
    charts, pools and namespace, are the cluster's)."""
    return [
        r
        for r in run.resources
        if r.custom and r.type.startswith("kubernetes:") and not any(p in r.urn for p in PLATFORM_COMPONENTS)
    ]


def containers(run: StackRun) -> list[tuple[str, dict]]:
    found = []
    for r in k8s_objects(run):
        spec = r.inputs.get("spec", {})
        if r.type.endswith(":Deployment"):
            pod = spec["template"]["spec"]
        elif r.type.endswith(":CronJob"):
            pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        else:
            continue
        found += [(r.inputs["metadata"]["name"], c) for c in pod["containers"]]
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_every_workload_object_is_declared_once(stack: str) -> None:
    run = cached_run(stack)
    counts = Counter(r.type for r in k8s_objects(run))
    for type_, n in EXPECTED_KINDS.items():
        assert counts[type_] == n, type_
    assert counts["kubernetes:autoscaling/v2:HorizontalPodAutoscaler"] == 1  # serving; Dask workers have none
    assert Counter(r.type for r in run.resources if r.type in K8S_COMPONENTS) == dict.fromkeys(K8S_COMPONENTS, 1)


@pytest.mark.parametrize("stack", STACKS)
def test_workloads_use_the_platform_provider_and_are_parented(stack: str) -> None:
    run = cached_run(stack)
    provider = next(r for r in run.resources if r.type == "pulumi:providers:kubernetes")
    component_urns = {r.urn for r in run.resources if r.type in K8S_COMPONENTS | OPTIONAL_K8S_COMPONENTS}
    for r in k8s_objects(run):
        assert r.provider_urn == provider.urn, f"{r.type} {r.name} uses the default provider"
        assert r.parent in component_urns, f"{r.type} {r.name} is not inside a k8s component"
        # Explicit names: Pulumi would otherwise add a random suffix and break Service DNS names.
        assert r.inputs["metadata"]["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_hpa_scaled_deployments_leave_replicas_to_the_hpa(stack: str) -> None:
    # Without ignoreChanges on spec.replicas, every `pulumi up` resets the count the HPA chose.
    run = cached_run(stack)
    scaled = {
        h.inputs["spec"]["scaleTargetRef"]["name"]
        for h in run.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
        if h.inputs["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }
    assert scaled == {"serving"}
    for dep in run.of_type("kubernetes:apps/v1:Deployment"):
        name = dep.inputs["metadata"]["name"]
        ignored = dep.options["ignoreChanges"]
        if name in scaled:
            assert ignored == ["spec.replicas"], f"{name} is HPA-scaled but Pulumi would reset its replicas"
        else:  # a fixed-size Deployment stays fully managed
            assert ignored == [], f"{name} has no HPA but ignores {ignored}"
        assert dep.inputs["spec"]["replicas"] >= 1  # still set: the size at creation


@pytest.mark.parametrize("stack", STACKS)
def test_every_workload_object_waits_for_its_namespace(stack: str) -> None:
    # A component's depends_on does not order the objects inside it. Objects sent before their
    # namespace exists retry "not found" in the engine's limited parallel slots and can starve the
    # namespace's own create on a small machine; each object must depend on it itself.
    run = cached_run(stack)
    objects = k8s_objects(run)
    namespace = next(r for r in objects if r.type == "kubernetes:core/v1:Namespace")
    for r in objects:
        if r is not namespace and r.inputs["metadata"].get("namespace") == namespace.inputs["metadata"]["name"]:
            assert namespace.urn in r.dependencies, f"{r.type} {r.name} may be created before its namespace"


@pytest.mark.parametrize("stack", STACKS)
def test_the_first_deploy_trains_once_before_the_serving_deployment(stack: str) -> None:
    # pulumi-kubernetes waits for a Deployment to become available and for a Job to complete: the
    # serving pods can become ready only once a model exists, so the first training run comes first.
    run = cached_run(stack)
    by_name = {(r.type.rsplit(":", 1)[1], r.inputs["metadata"]["name"]): r for r in k8s_objects(run)}
    refresh, train = by_name["Job", "bootstrap-refresh"], by_name["Job", "bootstrap-train"]
    serving = by_name["Deployment", "serving"]
    assert train.urn in serving.dependencies
    assert refresh.urn in train.dependencies
    dask = {by_name["Deployment", n].urn for n in ("dask-scheduler", "dask-worker")}
    assert dask <= set(refresh.dependencies)
    for job, name in ((refresh, "refresh"), (train, "train")):
        cron = by_name["CronJob", name].inputs["spec"]["jobTemplate"]["spec"]
        assert job.inputs["spec"]["template"] == cron["template"]
        # Kept once done, never re-run by a later image or settings change.
        assert "ttlSecondsAfterFinished" not in job.inputs["spec"]
        assert job.options["ignoreChanges"] == ["spec"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_container_runs_the_stack_image_by_digest(stack: str) -> None:
    run = cached_run(stack)
    found = containers(run)
    assert len(found) == 6
    assert {c["image"] for _, c in found} == {run.outputs["imageReference"]}
    assert run.outputs["imageReference"].endswith(f"@{DIGEST}")


@pytest.mark.parametrize("stack", STACKS)
def test_service_accounts_match_the_identity_bindings(stack: str) -> None:
    run = cached_run(stack)
    accounts = {
        (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"])
        for r in run.of_type("kubernetes:core/v1:ServiceAccount")
    }
    assert accounts == {("purchase-classifier", sa) for sa in SERVICE_ACCOUNTS}
    used = set()
    for r in k8s_objects(run):
        spec = r.inputs.get("spec", {})
        pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}))
        if pod:
            used.add(pod["spec"]["serviceAccountName"])
    assert used == set(SERVICE_ACCOUNTS)
    assocs = {
        (a.inputs["namespace"], a.inputs["serviceAccount"])
        for a in run.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    }
    if stack != "local":
        assert assocs == {("purchase-classifier", w) for w in IDENTITY_WORKLOADS} | {("kube-system", "karpenter")}
        annotated = {
            r.inputs["metadata"]["name"]: r.inputs["metadata"].get("annotations", {})
            for r in run.of_type("kubernetes:core/v1:ServiceAccount")
        }
        for workload in IDENTITY_WORKLOADS:
            role = annotated[workload]["purchase-classifier/iam-role-arn"]
            assert role == run.outputs["roleArns"][workload]
        assert "purchase-classifier/iam-role-arn" not in annotated["dask-scheduler"]


@pytest.mark.parametrize("stack", STACKS)
def test_database_url_only_in_a_secret_and_marked_secret(stack: str) -> None:
    run = cached_run(stack)
    (secret,) = run.of_type("kubernetes:core/v1:Secret")
    data = secret.inputs["stringData"]
    assert data.get(SECRET_SIG), "the database URL must stay a Pulumi secret"
    assert data["value"]["DATABASE_URL"].startswith("postgresql")
    for name, c in containers(run):
        for env in c["env"]:
            assert "postgresql" not in str(env.get("value", "")), f"{name} has the DB URL in plain env"


@pytest.mark.parametrize("stack", STACKS)
def test_scheduler_address_is_the_scheduler_service(stack: str) -> None:
    run = cached_run(stack)
    assert run.outputs["daskSchedulerAddress"] == "tcp://dask-scheduler.purchase-classifier.svc:8786"
    services = {r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:core/v1:Service")}
    assert services == {"dask-scheduler", "serving"}


def test_existing_mode_with_storage_keys_gets_a_storage_secret() -> None:
    run = run_stack(
        "local",
        overrides={"imageDigest": DIGEST},
        secrets={
            "databaseUrl": "postgresql+psycopg://pc:pc@postgres.data:5432/purchases",
            "storageAccessKeyId": "minioadmin",
            "storageSecretAccessKey": "minio-secret",
        },
    )
    secrets = {r.inputs["metadata"]["name"]: r for r in run.of_type("kubernetes:core/v1:Secret")}
    assert set(secrets) == {"database-url", "storage-credentials"}
    storage = secrets["storage-credentials"].inputs["stringData"]
    assert storage[SECRET_SIG] and set(storage["value"]) == {"credentials"}
    assert "aws_secret_access_key = minio-secret" in storage["value"]["credentials"]
    env = {e["name"]: e for _, c in containers(run) if c["name"] == "worker" for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio.svc.cluster.local:9000"
    assert env["AWS_SHARED_CREDENTIALS_FILE"]["value"].startswith(
        "/var/run/secrets/purchase-classifier/storage-credentials/"
    )


def test_a_tag_instead_of_a_digest_stops_the_program() -> None:
    with pytest.raises(pulumi.RunError, match="tags are refused"):
        run_stack("dev", overrides={"imageDigest": "v1.2.3"})


def test_worker_memory_too_small_stops_the_program() -> None:
    raw = load_stack_config("dev")
    workloads = raw["purchase-classifier:workloads"]
    workloads["dask"]["workers"]["resources"] = {
        "requests": {"cpu": "1", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "400Mi"},
    }
    with pytest.raises(
        pulumi.RunError, match=r"purchase-classifier:workloads\.dask\.workers\.resources.*at least 768Mi"
    ):
        run_stack("dev", overrides={"imageDigest": DIGEST, "purchase-classifier:workloads": workloads})
    # Refused when the config is parsed, with the other checks, not once the workloads are declared.
    with pytest.raises(ConfigError, match="at least 768Mi"):
        parse_config({**raw, "purchase-classifier:workloads": workloads}, aws_region="eu-west-1")


def test_pulumi_entry_point_still_runs_the_program() -> None:
    """Pulumi runs ``infra/`` as a script (``runpy.run_path``); that path must build the stack,
    not start the ``python -m infra`` CLI."""
    from infra.mockrun import to_pulumi_config

    raw = load_stack_config("local")
    raw["purchase-classifier:imageDigest"] = DIGEST
    config, secret_keys = to_pulumi_config(raw, {"databaseUrl": "sqlite:///x.db"})
    program_dir = Path(ROOT, "infra")
    run = run_program(
        lambda: runpy.run_path(str(program_dir), run_name="__main__"),
        stack="local",
        config=config,
        secret_keys=secret_keys,
    )
    assert run.of_type("kubernetes:apps/v1:Deployment")
    assert run.outputs["servingUrl"] == "http://serving.purchase-classifier.svc:8080"
