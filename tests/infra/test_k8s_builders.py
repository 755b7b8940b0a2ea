"""Pure Kubernetes builders (no Pulumi): every stack file's workloads config in, plain objects out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from infra.config import parse_config
from infra.k8s import common, dask, jobs, namespace, serving
from infra.k8s.common import Context, database_port, endpoint_port
from infra.mockrun import DEFAULT_MOCK_SECRETS, load_stack_config, to_pulumi_config
from infra.naming import DASK_NODE_LABEL_KEY, DASK_TAINT_KEY, SERVICE_ACCOUNTS
from infra.schema import Resources, StackConfig
from infra.schema.workloads import worker_memory_limit
from tests.infra.harness import DIGEST, STACKS

IMAGE = f"registry.example.com/purchase-classifier@{DIGEST}"


def stack_config(stack: str) -> StackConfig:
    raw = load_stack_config(stack)
    raw["purchase-classifier:imageDigest"] = DIGEST
    config, secret_keys = to_pulumi_config(raw, DEFAULT_MOCK_SECRETS)
    return parse_config(config, secret_keys=secret_keys, stack=stack, aws_region=raw.get("aws:region"))


def make_ctx(stack: str = "dev", **overrides: Any) -> Context:
    cfg = stack_config(stack)
    values: dict[str, Any] = {
        "workloads": cfg.workloads,
        "instance": stack,
        "image": IMAGE,
        "image_digest": DIGEST,
        "store_url": "s3://bucket-x",
        "storage_endpoint_url": cfg.storage.endpoint_url,
        "storage_credentials": False,
        "aws_region": "eu-west-1" if cfg.is_eks else None,
        "dask_node_pool": cfg.is_eks,
        "database_port": 5432,
    }
    values.update(overrides)
    return Context(**values)


def all_objects(ctx: Context) -> list[dict[str, Any]]:
    objs = [
        dask.build_scheduler_deployment(ctx),
        dask.build_scheduler_service(ctx),
        dask.build_worker_deployment(ctx),
        dask.build_worker_pdb(ctx),
        *dask.build_network_policies(ctx),
        serving.build_deployment(ctx),
        serving.build_service(ctx),
        serving.build_hpa(ctx),
        serving.build_pdb(ctx),
        serving.build_network_policy(ctx),
        *(jobs.build_cronjob(ctx, job) for job in common.JOBS),
    ]
    return objs


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objs:
        if obj["kind"] == "Deployment":
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def res(cpu: str, memory: str) -> Resources:
    return Resources.model_validate(
        {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": cpu, "memory": memory}}
    )


# ------------------------------------------------------------------ every container


@pytest.mark.parametrize("stack", STACKS)
def test_every_container_is_hardened_pinned_and_bounded(stack: str) -> None:
    ctx = make_ctx(stack)
    specs = list(pod_specs(all_objects(ctx)))
    assert len(specs) == 6
    for name, spec in specs:
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["serviceAccountName"] in SERVICE_ACCOUNTS
        assert {"name": "tmp", "emptyDir": spec["volumes"][0]["emptyDir"]} == spec["volumes"][0]
        for c in spec["containers"]:
            assert c["image"] == IMAGE and "@sha256:" in c["image"], name
            assert "command" not in c, "the image's ENTRYPOINT (python -m ml) must be kept"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == sc["runAsGroup"] == 10001
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert set(c["resources"]) == {"requests", "limits"}
            assert set(c["resources"]["limits"]) == set(c["resources"]["requests"]) == {"cpu", "memory"}
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            env = env_of(c)
            assert env["HOME"]["value"] == env["MPLCONFIGDIR"]["value"] == "/tmp"
            assert env["ML_IMAGE_DIGEST"]["value"] == DIGEST


def test_recommended_labels_on_objects_and_pods() -> None:
    ctx = make_ctx()
    for obj in all_objects(ctx):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "purchase-classifier"
        assert labels["app.kubernetes.io/instance"] == "dev"
        assert labels["app.kubernetes.io/managed-by"] == "pulumi"
        assert labels["app.kubernetes.io/part-of"] == "purchase-classifier"
        # An object's own labels do not change with the image: a promotion's diff is the image.
        assert "app.kubernetes.io/version" not in labels
        assert obj["metadata"]["namespace"] == "purchase-classifier"
    for obj in all_objects(ctx):
        if obj["kind"] in ("Deployment", "CronJob"):
            spec = obj["spec"] if obj["kind"] == "Deployment" else obj["spec"]["jobTemplate"]["spec"]
            # The pods say what they run.
            assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "sha256-0123456789ab"
        if obj["kind"] == "Deployment":
            # Selectors are immutable: the version label must stay out of them.
            assert "app.kubernetes.io/version" not in obj["spec"]["selector"]["matchLabels"]


# ------------------------------------------------------------------ Dask


@pytest.mark.parametrize(
    ("cpu", "memory", "threads", "limit"),
    [
        ("2", "4Gi", 2, "3687MiB"),
        ("1", "2Gi", 1, "1792MiB"),
        ("500m", "1Gi", 1, "768MiB"),
        ("2", "8Gi", 2, "7373MiB"),
        ("3500m", "6Gi", 3, "5530MiB"),
    ],
)
def test_worker_threads_and_memory_limit_derive_from_container_limits(
    cpu: str, memory: str, threads: int, limit: str
) -> None:
    r = res(cpu, memory)
    assert dask.worker_threads(r) == threads
    assert worker_memory_limit(r) == limit


def test_worker_memory_too_small_for_nanny_headroom_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 768Mi"):
        worker_memory_limit(res("1", "500Mi"))


def test_scheduler_deployment_and_service() -> None:
    ctx = make_ctx("prod")
    dep = dask.build_scheduler_deployment(ctx)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["dask", "scheduler", "--port", "8786", "--dashboard-address", ":8787"]
    assert {p["containerPort"] for p in c["ports"]} == {8786, 8787}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http-dashboard"}
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "dask-scheduler"
    svc = dask.build_scheduler_service(ctx)
    assert svc["metadata"]["name"] == "dask-scheduler"
    assert {p["port"] for p in svc["spec"]["ports"]} == {8786, 8787}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert ctx.scheduler_address == "tcp://dask-scheduler.purchase-classifier.svc:8786"


def test_worker_deployment_args_env_and_placement_in_eks_mode() -> None:
    ctx = make_ctx("dev")
    dep = dask.build_worker_deployment(ctx)
    assert dep["spec"]["replicas"] == 2
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["args"] == [
        "dask",
        "worker",
        "tcp://dask-scheduler.purchase-classifier.svc:8786",
        "--nthreads",
        "2",
        "--memory-limit",
        "3687MiB",
        "--name",
        "$(POD_NAME)",
        "--local-directory",
        "/tmp",
        "--worker-port",
        "8788",
        "--nanny-port",
        "8790",
        "--dashboard-address",
        ":8789",
    ]
    env = env_of(c)
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # $(POD_NAME) only expands when POD_NAME is defined before use, i.e. in env.
    thresholds = {k: env[f"DASK_DISTRIBUTED__WORKER__MEMORY__{k}"]["value"] for k in dask.MEMORY_THRESHOLDS}
    assert [float(thresholds[k]) for k in ("TARGET", "SPILL", "PAUSE", "TERMINATE")] == sorted(
        float(v) for v in thresholds.values()
    )
    assert env["ML_STORE"]["value"] == "s3://bucket-x"
    assert "DATABASE_URL" not in env
    assert spec["nodeSelector"] == {DASK_NODE_LABEL_KEY: "dask"}
    assert spec["tolerations"] == [
        {"key": DASK_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert spec["serviceAccountName"] == "dask-worker"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http-dashboard"}


def test_worker_without_dask_node_pool_is_not_pinned() -> None:
    spec = dask.build_worker_deployment(make_ctx("local"))["spec"]["template"]["spec"]
    assert "nodeSelector" not in spec  # kind/minikube have no labelled Dask nodes
    assert spec["tolerations"][0]["key"] == DASK_TAINT_KEY


@pytest.mark.parametrize(("stack", "replicas"), [("dev", 2), ("staging", 3), ("prod", 4)])
def test_workers_are_a_fixed_count_that_retires_through_the_scheduler(stack: str, replicas: int) -> None:
    ctx = make_ctx(stack)
    assert dask.build_worker_pdb(ctx)["spec"]["maxUnavailable"] == 1
    dep = dask.build_worker_deployment(ctx)
    assert dep["spec"]["replicas"] == replicas
    spec = dep["spec"]["template"]["spec"]
    (worker,) = spec["containers"]
    assert worker["lifecycle"]["preStop"]["exec"]["command"] == [
        "python",
        "-c",
        dask.RETIRE_SCRIPT,
        "tcp://dask-scheduler.purchase-classifier.svc:8786",
    ]
    # Retiring copies results to the other workers: time for it before SIGKILL.
    assert spec["terminationGracePeriodSeconds"] == dask.WORKER_TERMINATION_GRACE_SECONDS >= 120


def test_only_workers_and_train_predict_reach_the_scheduler() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in dask.build_network_policies(make_ctx())}
    scheduler = policies["dask-scheduler"]
    assert scheduler["podSelector"]["matchExpressions"][0]["values"] == ["dask-scheduler"]
    # The pods' rule, then (dev enables monitoring) Prometheus's namespace to the metrics port only.
    rule, *scrape = scheduler["ingress"]
    assert [r["ports"] for r in scrape] == [[{"protocol": "TCP", "port": 8787}]]
    assert rule["from"][0]["podSelector"]["matchExpressions"][0]["values"] == [
        "dask-worker",
        "predict",
        "train",
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8786}]
    clients = policies["dask-clients"]
    assert clients["podSelector"]["matchExpressions"][0]["values"] == ["predict", "train"]
    assert clients["policyTypes"] == ["Egress"]


# ------------------------------------------------------------------ serving


def test_serving_deployment() -> None:
    ctx = make_ctx("prod")
    dep = serving.build_deployment(ctx)
    spec = dep["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    keys = {t["topologyKey"] for t in pod["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    c = pod["spec"]["containers"][0]
    assert c["args"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = env_of(c)
    assert env["ML_STORE"]["value"] == "s3://bucket-x"
    assert env["ML_MODEL_NAME"]["value"] == "purchase-classifier"
    # No override in the stack files: each model's own threshold, chosen at its training, holds.
    assert serving.REVIEW_THRESHOLD_ENV not in env
    assert "DATABASE_URL" not in env


def test_a_review_threshold_in_the_stack_overrides_the_models() -> None:
    workloads = stack_config("dev").workloads
    overridden = workloads.model_copy(
        update={"serving": workloads.serving.model_copy(update={"review_threshold": 0.7})}
    )
    ctx = make_ctx("dev", workloads=overridden)
    env = env_of(serving.build_deployment(ctx)["spec"]["template"]["spec"]["containers"][0])
    assert env[serving.REVIEW_THRESHOLD_ENV]["value"] == "0.7"


@pytest.mark.parametrize(("stack", "hpa"), [("dev", (1, 2, 75)), ("staging", (2, 4, 70)), ("prod", (3, 10, 65))])
def test_serving_hpa_from_config(stack: str, hpa: tuple[int, int, int]) -> None:
    spec = serving.build_hpa(make_ctx(stack))["spec"]
    target = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert (spec["minReplicas"], spec["maxReplicas"], target) == hpa
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "serving"}


def test_serving_admits_clients_only_from_configured_namespaces() -> None:
    spec = serving.build_network_policy(make_ctx("dev"))["spec"]
    # The clients' rule, then (dev enables monitoring) Prometheus's namespace to the same port.
    rule, *scrape = spec["ingress"]
    assert [r["ports"] for r in scrape] == [[{"protocol": "TCP", "port": 8080}]]
    expr = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["webapp"]}
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_serving_with_no_client_namespaces_admits_none() -> None:
    ctx = make_ctx("dev")
    closed = ctx.workloads.model_copy(
        update={
            "serving": ctx.workloads.serving.model_copy(update={"allowed_client_namespaces": []}),
            "monitoring": ctx.workloads.monitoring.model_copy(update={"enabled": False}),
        }
    )
    spec = serving.build_network_policy(make_ctx("dev", workloads=closed))["spec"]
    assert spec["ingress"] == [] and spec["policyTypes"] == ["Ingress"]


# ------------------------------------------------------------------ CronJobs


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("job", common.JOBS)
def test_cronjob_settings_from_config(stack: str, job: str) -> None:
    ctx = make_ctx(stack)
    cfg = getattr(ctx.workloads.jobs, job)
    obj = jobs.build_cronjob(ctx, job)
    spec = obj["spec"]
    assert obj["metadata"]["name"] == job
    assert spec["schedule"] == cfg.schedule
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == cfg.starting_deadline_seconds
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == cfg.backoff_limit
    assert job_spec["activeDeadlineSeconds"] == cfg.active_deadline_seconds
    assert job_spec["ttlSecondsAfterFinished"] == cfg.ttl_seconds_after_finished
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == job
    c = pod["containers"][0]
    assert c["args"] == jobs.JOB_ARGS[job]
    env = env_of(c)
    assert "DATABASE_URL" not in env
    assert env["DATABASE_URL_FILE"]["value"] == "/var/run/secrets/purchase-classifier/database-url/DATABASE_URL"
    assert {
        "name": "database-url",
        "mountPath": "/var/run/secrets/purchase-classifier/database-url",
        "readOnly": True,
    } in c["volumeMounts"]
    assert ("DASK_SCHEDULER_ADDRESS" in env) is (job in ("train", "predict"))
    if job != "refresh":
        assert env["DASK_SCHEDULER_ADDRESS"]["value"] == ctx.scheduler_address
    assert c["resources"]["limits"] == {"cpu": cfg.resources.limits.cpu, "memory": cfg.resources.limits.memory}


def test_job_args_are_the_ml_cli_contract() -> None:
    assert jobs.JOB_ARGS == {
        "refresh": ["refresh"],
        "train": ["train", "--snapshot", "latest"],
        "predict": ["predict"],
    }
    with pytest.raises(ValueError, match="unknown job"):
        jobs.build_cronjob(make_ctx(), "evaluate")


# ------------------------------------------------------------------ namespace and storage


def test_namespace_enforces_restricted_pod_security() -> None:
    labels = namespace.build_namespace("pc", "dev", "1.35")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        # Pinned to the cluster's version: a control-plane upgrade does not change the rules under the pods.
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.35"


def test_default_deny_covers_both_directions() -> None:
    spec = namespace.build_default_deny(make_ctx())["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_service_account_records_its_role() -> None:
    sa = namespace.build_service_account(make_ctx(), "train", "arn:aws:iam::1:role/x")
    assert sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["annotations"] == {"purchase-classifier/iam-role-arn": "arn:aws:iam::1:role/x"}
    assert "annotations" not in namespace.build_service_account(make_ctx(), "train")["metadata"]


def test_store_egress_ports_eks_and_existing() -> None:
    eks = namespace.build_store_egress(make_ctx("dev", database_port=5432))["spec"]
    assert [p["port"] for p in eks["egress"][0]["ports"]] == [443]
    assert eks["egress"][1]["to"] == [{"ipBlock": {"cidr": namespace.POD_IDENTITY_AGENT}}]
    assert eks["podSelector"]["matchExpressions"][0]["values"] == sorted(common.DATA_COMPONENTS)
    local = namespace.build_store_egress(
        make_ctx("local", database_port=None, storage_endpoint_url="http://minio.minio.svc:9000")
    )["spec"]
    assert [p["port"] for p in local["egress"][0]["ports"]] == [443, 9000]
    assert len(local["egress"]) == 1


def test_only_the_jobs_reach_the_database() -> None:
    spec = namespace.build_database_egress(make_ctx("dev", database_port=5432))["spec"]
    assert spec["podSelector"]["matchExpressions"][0]["values"] == ["predict", "refresh", "train"]
    assert [p["port"] for rule in spec["egress"] for p in rule["ports"]] == [5432]
    # No other egress policy in the namespace opens the database port (serving above all).
    others = [namespace.build_store_egress(make_ctx("dev", database_port=5432)), namespace.build_dns_egress(make_ctx())]
    assert all(p["port"] != 5432 for o in others for rule in o["spec"]["egress"] for p in rule["ports"])
    assert namespace.build_database_egress(make_ctx("local", database_port=None))["spec"]["egress"] == []


def test_existing_mode_storage_env_uses_endpoint_and_a_credentials_file() -> None:
    ctx = make_ctx("local", storage_credentials=True)
    pod = jobs.build_cronjob(ctx, "refresh")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio.svc.cluster.local:9000"
    assert env["AWS_SHARED_CREDENTIALS_FILE"]["value"] == (
        "/var/run/secrets/purchase-classifier/storage-credentials/credentials"
    )
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "AWS_REGION" not in env
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "database-url", "storage-credentials"}


SECRET_MODE = 0o440


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("storage_credentials", [False, True])
def test_secrets_reach_containers_only_as_read_only_files(stack: str, storage_credentials: bool) -> None:
    """No env value comes from a Secret (checkov CKV_K8S_35); every file an env value names is in a
    read-only Secret mount of that container, whose volume is the Secret with a restrictive mode."""
    pods = dict(pod_specs(all_objects(make_ctx(stack, storage_credentials=storage_credentials))))
    mounting = set()
    for name, spec in pods.items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            assert "envFrom" not in c
            assert all("secretKeyRef" not in e.get("valueFrom", {}) for e in c["env"]), name
            secret_mounts = [m for m in c["volumeMounts"] if m["mountPath"].startswith(common.SECRETS_DIR)]
            for mount in secret_mounts:
                assert mount["readOnly"] is True
                assert volumes[mount["name"]] == {
                    "name": mount["name"],
                    "secret": {"secretName": mount["name"], "defaultMode": SECRET_MODE},
                }
                mounting.add((name, mount["name"]))
            for e in c["env"]:
                if e.get("value", "").startswith(common.SECRETS_DIR):
                    assert any(e["value"].startswith(m["mountPath"] + "/") for m in secret_mounts), (name, e)
        assert {v["name"] for v in spec["volumes"] if "secret" in v} == {m for n, m in mounting if n == name}
    storage = {"storage-credentials"} if storage_credentials else set()
    expected = {(job, s) for job in common.JOBS for s in {"database-url", *storage}}
    expected |= {(component, s) for component in ("dask-worker", "serving") for s in storage}
    assert mounting == expected


def test_shared_credentials_file_is_what_botocore_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = namespace.build_storage_secret(make_ctx("local"), "AKIDEXAMPLE", "wJalr/EXAMPLEKEY+x")
    assert set(secret["stringData"]) == {"credentials"}
    path = tmp_path / "credentials"
    path.write_text(secret["stringData"]["credentials"])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    credentials = botocore.session.Session().get_credentials()
    assert credentials is not None and credentials.method == "shared-credentials-file"
    assert (credentials.access_key, credentials.secret_key) == ("AKIDEXAMPLE", "wJalr/EXAMPLEKEY+x")


def test_secrets_carry_values_only_in_string_data() -> None:
    secret = namespace.build_database_secret(make_ctx(), "postgresql://u:p@h/db")
    assert secret["stringData"] == {"DATABASE_URL": "postgresql://u:p@h/db"}
    assert secret["type"] == "Opaque"


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("postgresql+psycopg://u:p@db:6543/x", 6543),
        ("postgresql+psycopg://u:p@db/x", 5432),
        ("mysql+pymysql://u@db/x", 3306),
        ("sqlite:///var/purchases.db", None),
        (None, None),
        ("weird://host/x", None),
    ],
)
def test_database_port(url: str | None, port: int | None) -> None:
    assert database_port(url) == port


def test_endpoint_port() -> None:
    assert endpoint_port("http://minio:9000") == 9000
    assert endpoint_port("https://s3.example.com") == 443
    assert endpoint_port("http://minio") == 80
    assert endpoint_port(None) is None
