"""Shared pieces of every Kubernetes object the program emits: names, labels, security, env.

Everything here is a pure function of plain values so the builders in ``dask.py``, ``serving.py``,
``jobs.py`` and ``namespace.py`` can be unit-tested without Pulumi. The hardening that principle 5
asks of *every* container (non-root, read-only root filesystem, no privilege escalation, no
capabilities, ``RuntimeDefault`` seccomp, requests and limits) lives in :func:`container` and
:func:`pod_spec` only, so no workload can forget a piece of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from infra.naming import PROJECT
from infra.schema import DEFAULT_CLUSTER_VERSION, Autoscaling, Resources, Workloads

Obj = dict[str, Any]
"""A Kubernetes object (or part of one) as plain JSON-shaped data."""

NO_VOLUNTARY_DISRUPTION = {"karpenter.sh/do-not-disrupt": "true"}
"""Karpenter does not consolidate or replace a node while a pod with this runs there: a job's run
(hours of training) or the Dask scheduler's task graph is not thrown away to save a node."""

RUN_AS_USER = 10001
"""The image's numeric non-root user and group; numeric so ``runAsNonRoot`` can be verified."""

# Component names: the ``app.kubernetes.io/component`` label and the object names.
SCHEDULER = "dask-scheduler"
WORKER = "dask-worker"
SERVING = "serving"
REFRESH = "refresh"
TRAIN = "train"
PREDICT = "predict"
JOBS = (REFRESH, TRAIN, PREDICT)
DATA_COMPONENTS = (WORKER, REFRESH, TRAIN, PREDICT, SERVING)
"""Pods that read or write the object store (and, for jobs, the database)."""
DASK_CLIENTS = (TRAIN, PREDICT)
"""Jobs that connect to the Dask scheduler."""

# Ports. Dask's worker and nanny ports are fixed (Dask picks random ones by default) so that
# NetworkPolicies can name them.
SCHEDULER_PORT = 8786
SCHEDULER_DASHBOARD_PORT = 8787
WORKER_PORT = 8788
WORKER_DASHBOARD_PORT = 8789
NANNY_PORT = 8790
SERVING_PORT = 8080

DATABASE_SECRET = "database-url"
DATABASE_SECRET_KEY = "DATABASE_URL"
STORAGE_SECRET = "storage-credentials"
STORAGE_SECRET_KEY = "credentials"
"""The storage Secret's one key: an AWS shared credentials file, which boto (and so s3fs) reads
through ``AWS_SHARED_CREDENTIALS_FILE`` with no code of ours."""
TMP_VOLUME = "tmp"
SECRETS_DIR = "/var/run/secrets/purchase-classifier"
"""Secrets are mounted as files (one read-only directory per Secret, one file per key), never put
in env: env is visible to every process of the container and in crash dumps and ``/proc``."""
SECRET_FILE_MODE = 0o440
"""Read-only, for the file's owner and the pod's ``fsGroup`` (the containers' group) only."""

_DEFAULT_DB_PORTS = {
    "postgresql": 5432,
    "postgres": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "mssql": 1433,
    "oracle": 1521,
}


@dataclass(frozen=True)
class Context:
    """Plain values every builder needs; the component layer resolves Pulumi outputs into it."""

    workloads: Workloads
    instance: str
    """``app.kubernetes.io/instance``: the stack's environment (dev, staging, prod, local)."""
    image: str
    """``<registry>@sha256:...`` (already checked by :func:`infra.images.image_reference`)."""
    image_digest: str
    store_url: str
    """``s3://<bucket>``: what ``ML_STORE`` points the jobs at."""
    storage_endpoint_url: str | None = None
    """S3-compatible endpoint (existing mode, e.g. MinIO); ``None`` for AWS S3."""
    storage_credentials: bool = False
    """Whether a ``storage-credentials`` Secret exists (existing mode with access keys)."""
    aws_region: str | None = None
    dask_node_pool: bool = False
    """Whether the cluster has the labelled, tainted Dask node group (eks mode) to pin workers to."""
    database_port: int | None = None
    """TCP port of the database, for the egress NetworkPolicy (``None``: SQLite or unknown)."""
    kubernetes_version: str = DEFAULT_CLUSTER_VERSION
    """The cluster's Kubernetes version (``cluster.version``): Pod Security Admission is pinned to it."""

    @property
    def namespace(self) -> str:
        return self.workloads.namespace

    @property
    def scheduler_address(self) -> str:
        """In-cluster address of the scheduler Service, as ``DASK_SCHEDULER_ADDRESS`` expects."""
        return f"tcp://{SCHEDULER}.{self.namespace}.svc:{SCHEDULER_PORT}"


def database_port(url: str | None) -> int | None:
    """The TCP port a SQLAlchemy URL connects to, so egress can be limited to it.

    The URL is secret config; only its port ends up in a manifest.
    """
    if not url:
        return None
    parts = urlsplit(url)
    dialect = parts.scheme.split("+", 1)[0]
    if dialect == "sqlite":
        return None
    try:
        port = parts.port
    except ValueError:
        port = None
    return port or _DEFAULT_DB_PORTS.get(dialect)


def endpoint_port(url: str | None) -> int | None:
    """Port of an ``http(s)://`` endpoint (explicit or the scheme's default)."""
    if not url:
        return None
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


# --------------------------------------------------------------------------- labels and metadata


def pod_security_labels(kubernetes_version: str, enforce: str, audit: str) -> dict[str, str]:
    """Pod Security Admission labels of a namespace: ``enforce`` rejects pods, ``audit`` and ``warn``
    report them; all pinned to the cluster's version (``"1.35"``), not ``latest``, which would change
    the rules under the pods at a control-plane upgrade."""
    levels = {"enforce": enforce, "audit": audit, "warn": audit}
    return {f"pod-security.kubernetes.io/{mode}": level for mode, level in levels.items()} | {
        f"pod-security.kubernetes.io/{mode}-version": f"v{kubernetes_version}" for mode in levels
    }


def selector_labels(ctx: Context, component: str) -> dict[str, str]:
    """Labels that identify a component's pods; immutable in Deployments, so no version in them."""
    return {
        "app.kubernetes.io/name": PROJECT,
        "app.kubernetes.io/instance": ctx.instance,
        "app.kubernetes.io/component": component,
    }


def object_labels(ctx: Context, component: str) -> dict[str, str]:
    """The recommended ``app.kubernetes.io/*`` labels of an object, without a version: they stay the
    same across promotions, so a promotion's diff is the image change on the workloads alone."""
    return selector_labels(ctx, component) | {
        "app.kubernetes.io/part-of": PROJECT,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def labels(ctx: Context, component: str) -> dict[str, str]:
    """Pod (and Job) template labels: :func:`object_labels` plus the version, the image digest
    (truncated), so the pods of each rollout say what they run."""
    return object_labels(ctx, component) | {"app.kubernetes.io/version": ctx.image_digest.replace(":", "-")[:19]}


def namespace_labels(instance: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": PROJECT,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/part-of": PROJECT,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def metadata(ctx: Context, name: str, component: str, **extra: Any) -> Obj:
    """Explicit names (no Pulumi auto-suffix): Services are addressed by name, e.g. the scheduler."""
    return {"name": name, "namespace": ctx.namespace, "labels": object_labels(ctx, component), **extra}


FIELD_MANAGER_ANNOTATION = "pulumi.com/patchFieldManager"
"""pulumi-kubernetes' annotation naming the Server-Side Apply field manager of an object. Without it
the provider draws a random manager per resource (``pulumi-kubernetes-<random>``) and keeps it only in
the state: an object created by a run whose record was lost (a killed ``pulumi up``) then belongs to a
manager no later run knows, and creating it again is a field conflict."""


def field_manager(stack: str) -> str:
    """The one field manager of a stack's objects: the next run of the same stack takes over what an
    interrupted run created, while another stack applying the same object still conflicts."""
    return f"{PROJECT}-{stack}"


def with_field_manager(meta: Any, manager: str) -> Obj:
    """``meta`` (an object's metadata) with :data:`FIELD_MANAGER_ANNOTATION` set to ``manager``."""
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise TypeError(f"expected an object's metadata as a mapping, got {type(meta).__name__}")
    return {**meta, "annotations": {**(meta.get("annotations") or {}), FIELD_MANAGER_ANNOTATION: manager}}


def prometheus_ingress(ctx: Context, *ports: int) -> list[Obj]:
    """NetworkPolicy ingress rules admitting Prometheus's namespace to ``ports`` (none when monitoring is off)."""
    if not ctx.workloads.monitoring.enabled:
        return []
    namespace = ctx.workloads.monitoring.namespace
    return [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}],
            "ports": [{"protocol": "TCP", "port": port} for port in ports],
        }
    ]


def component_selector(components: tuple[str, ...] | list[str]) -> Obj:
    """A ``podSelector`` matching any of ``components`` (NetworkPolicy peers and targets)."""
    return {
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": sorted(components)}]
    }


# --------------------------------------------------------------------------- containers and pods


def resources(res: Resources) -> Obj:
    return {
        "requests": {"cpu": res.requests.cpu, "memory": res.requests.memory},
        "limits": {"cpu": res.limits.cpu, "memory": res.limits.memory},
    }


def container_security_context() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(
    path: str,
    port: str | int,
    *,
    initial_delay: int = 5,
    period: int = 10,
    timeout: int = 3,
    failure_threshold: int = 3,
) -> Obj:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failure_threshold,
    }


def env_value(name: str, value: str) -> Obj:
    return {"name": name, "value": value}


def secret_file(secret: str, key: str) -> str:
    """Path of ``key`` of ``secret`` in a container that mounts it (``container(secrets=...)``)."""
    return f"{SECRETS_DIR}/{secret}/{key}"


def base_env(ctx: Context) -> list[Obj]:
    """Env every container gets: the read-only root filesystem leaves only ``/tmp`` writable."""
    return [
        env_value("ML_IMAGE_DIGEST", ctx.image_digest),
        env_value("HOME", "/tmp"),
        env_value("MPLCONFIGDIR", "/tmp"),
    ]


def storage_env(ctx: Context) -> list[Obj]:
    """Where the object store is and how to reach it (identity in eks mode, keys otherwise)."""
    env = [env_value("ML_STORE", ctx.store_url), env_value("ML_MODEL_NAME", ctx.workloads.model_name)]
    if ctx.aws_region:
        env += [env_value("AWS_REGION", ctx.aws_region), env_value("AWS_DEFAULT_REGION", ctx.aws_region)]
    if ctx.storage_endpoint_url:
        env.append(env_value("AWS_ENDPOINT_URL", ctx.storage_endpoint_url))
    if ctx.storage_credentials:
        env.append(env_value("AWS_SHARED_CREDENTIALS_FILE", secret_file(STORAGE_SECRET, STORAGE_SECRET_KEY)))
    return env


def storage_secrets(ctx: Context) -> list[str]:
    """Secrets a container with :func:`storage_env` mounts: the access keys, when there are any."""
    return [STORAGE_SECRET] if ctx.storage_credentials else []


def database_env() -> list[Obj]:
    """``DATABASE_URL_FILE``: the URL carries credentials, so it is only ever read from the Secret's
    file (the container must mount :data:`DATABASE_SECRET`)."""
    return [env_value(f"{DATABASE_SECRET_KEY}_FILE", secret_file(DATABASE_SECRET, DATABASE_SECRET_KEY))]


def container(
    ctx: Context,
    name: str,
    args: list[str],
    res: Resources,
    *,
    env: list[Obj] | None = None,
    ports: list[Obj] | None = None,
    readiness: Obj | None = None,
    liveness: Obj | None = None,
    secrets: list[str] | None = None,
) -> Obj:
    """One hardened container running the project image with ``args`` (the ENTRYPOINT is
    ``python -m ml``, so only ``args`` are set and the image decides the interpreter); each of
    ``secrets`` is mounted read-only under :data:`SECRETS_DIR` (:func:`pod_spec` adds the volumes)."""
    spec: Obj = {
        "name": name,
        "image": ctx.image,
        # Pinned by digest: the bytes cannot change, so pulling again would only cost time.
        "imagePullPolicy": "IfNotPresent",
        "args": list(args),
        "env": base_env(ctx) + (env or []),
        "resources": resources(res),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            *({"name": s, "mountPath": f"{SECRETS_DIR}/{s}", "readOnly": True} for s in secrets or []),
        ],
    }
    if ports:
        spec["ports"] = ports
    if readiness:
        spec["readinessProbe"] = readiness
    if liveness:
        spec["livenessProbe"] = liveness
    return spec


def pod_spec(
    containers: list[Obj],
    service_account: str,
    *,
    restart_policy: str | None = None,
    termination_grace: int = 30,
    tmp_size: str = "1Gi",
    **extra: Any,
) -> Obj:
    """Pod spec with the pod-level hardening, a bounded ``/tmp`` ``emptyDir`` (the only writable
    path; the bound keeps a runaway spill from filling the node's disk) and a Secret volume for
    each Secret its containers mount, so no mount can lack its volume."""
    mounted = {m["name"] for c in containers for m in c["volumeMounts"] if m["mountPath"].startswith(SECRETS_DIR)}
    secret_volumes = [
        {"name": s, "secret": {"secretName": s, "defaultMode": SECRET_FILE_MODE}} for s in sorted(mounted)
    ]
    spec: Obj = {
        "serviceAccountName": service_account,
        # No workload talks to the Kubernetes API; Pod Identity mounts its own token.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": termination_grace,
        "containers": containers,
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": tmp_size}}, *secret_volumes],
        **extra,
    }
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    return spec


HPA_OWNED_FIELDS = ("spec.replicas",)
"""Deployment fields an HPA writes: the Pulumi resource of an HPA-scaled Deployment ignores changes
to them (``ignore_changes``), or every ``pulumi up`` would reset the replica count the HPA chose.
The configured ``replicas`` still applies when the Deployment is created."""


def build_cpu_hpa(ctx: Context, deployment: str, scaling: Autoscaling, behavior: Obj | None = None) -> Obj:
    """A HorizontalPodAutoscaler keeping ``deployment``'s average CPU near the configured target."""
    spec: Obj = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": scaling.cpu_target_percent},
                },
            }
        ],
    }
    if behavior:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(ctx, deployment, deployment),
        "spec": spec,
    }
