"""The namespace every workload lives in, and what is shared by all of them.

The namespace enforces Pod Security Admission ``restricted`` at the cluster's own Kubernetes version
(not ``latest``, which would change the rules under the pods at a control-plane upgrade), so a pod
spec that loses a piece of hardening is rejected by the API server rather than silently admitted.
Traffic starts from default-deny in both directions; each workload module opens only what its pods
need, and this module opens what all of them need (DNS), what the object store's users need, and
the database port for the jobs alone (serving and the Dask workers never reach the database).

ServiceAccounts are created here, once, with the names the AWS side binds IAM roles to
(:mod:`infra.naming`), so the Pod Identity associations and the pods cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import (
    DATA_COMPONENTS,
    DATABASE_SECRET,
    DATABASE_SECRET_KEY,
    JOBS,
    STORAGE_SECRET,
    STORAGE_SECRET_KEY,
    Context,
    Obj,
    component_selector,
    endpoint_port,
    namespace_labels,
    pod_security_labels,
)
from infra.naming import SERVICE_ACCOUNTS

DATABASE_CLIENTS = JOBS
"""Pods that reach the database: the refresh, train and predict jobs."""

PSA_LEVEL = "restricted"
POD_IDENTITY_AGENT = "169.254.170.23/32"
"""EKS Pod Identity agent (host network, port 80): where the pods fetch their credentials."""


def build_namespace(name: str, instance: str, kubernetes_version: str) -> Obj:
    """The namespace, its Pod Security level pinned to ``kubernetes_version`` (``"1.35"``)."""
    psa = pod_security_labels(kubernetes_version, enforce=PSA_LEVEL, audit=PSA_LEVEL)
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": namespace_labels(instance) | psa},
    }


def build_service_account(ctx: Context, name: str, role_arn: str | None = None) -> Obj:
    """A workload's ServiceAccount; Pod Identity binds the IAM role by name, the annotation only
    records which role that is for a reader of the manifest."""
    meta: Obj = {"name": name, "namespace": ctx.namespace, "labels": namespace_labels(ctx.instance)}
    if role_arn:
        meta["annotations"] = {"purchase-classifier/iam-role-arn": role_arn}
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta,
        "automountServiceAccountToken": False,
    }


def _policy(ctx: Context, name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": namespace_labels(ctx.instance)},
        "spec": spec,
    }


def build_default_deny(ctx: Context) -> Obj:
    """No pod in the namespace sends or receives anything unless another policy allows it."""
    return _policy(ctx, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def build_dns_egress(ctx: Context) -> Obj:
    return _policy(
        ctx,
        "allow-dns",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        },
    )


_ANYWHERE = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"namespaceSelector": {}}]
"""Peers outside the cluster (S3, RDS) or in another namespace (MinIO, PostgreSQL on an existing
cluster): any address and any namespace, so only the ports limit these rules."""


def _tcp_ports(ports: set[int]) -> list[Obj]:
    return [{"protocol": "TCP", "port": p} for p in sorted(ports)]


def build_store_egress(ctx: Context) -> Obj:
    """Egress to the object store (and, on AWS, STS and the Pod Identity agent) for its users."""
    ports = {443}  # S3 and STS over TLS
    store_port = endpoint_port(ctx.storage_endpoint_url)
    if store_port:
        ports.add(store_port)
    rules: list[Obj] = [{"to": _ANYWHERE, "ports": _tcp_ports(ports)}]
    if ctx.storage_endpoint_url is None:
        rules.append({"to": [{"ipBlock": {"cidr": POD_IDENTITY_AGENT}}], "ports": _tcp_ports({80})})
    return _policy(
        ctx,
        "allow-store-egress",
        {"podSelector": component_selector(DATA_COMPONENTS), "policyTypes": ["Egress"], "egress": rules},
    )


def build_database_egress(ctx: Context) -> Obj:
    """Egress to the database port for the jobs only; with SQLite (no port) the jobs get none."""
    rules = [{"to": _ANYWHERE, "ports": _tcp_ports({ctx.database_port})}] if ctx.database_port else []
    return _policy(
        ctx,
        "allow-database-egress",
        {"podSelector": component_selector(DATABASE_CLIENTS), "policyTypes": ["Egress"], "egress": rules},
    )


def build_database_secret(ctx: Context, database_url: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": DATABASE_SECRET,
            "namespace": ctx.namespace,
            "labels": namespace_labels(ctx.instance),
        },
        "type": "Opaque",
        "stringData": {DATABASE_SECRET_KEY: database_url},
    }


def shared_credentials_file(access_key_id: str, secret_access_key: str) -> str:
    """The access keys as an AWS shared credentials file: mounted as a file and named by
    ``AWS_SHARED_CREDENTIALS_FILE``, boto (and so s3fs, in every process) reads it unaided."""
    return f"[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"


def _shared_credentials_file(keys: list[str]) -> str:
    return shared_credentials_file(*keys)


def build_storage_secret(ctx: Context, access_key_id: str, secret_access_key: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": STORAGE_SECRET,
            "namespace": ctx.namespace,
            "labels": namespace_labels(ctx.instance),
        },
        "type": "Opaque",
        "stringData": {STORAGE_SECRET_KEY: shared_credentials_file(access_key_id, secret_access_key)},
    }


def _service_account(account: str, values: list[Any]) -> Obj:
    ctx, role_arn = values
    return build_service_account(ctx, account, role_arn)


class Namespace(pulumi.ComponentResource):
    """Namespace, ServiceAccounts, Secrets and the namespace-wide NetworkPolicies.

    Secret values arrive as Pulumi outputs marked secret and stay outputs: they never pass through
    a pure builder as plain text, so they are encrypted in the state like the config they came from.
    """

    namespace: k8s.core.v1.Namespace

    def __init__(
        self,
        name: str,
        ctx: pulumi.Output[Context],
        *,
        database_url: pulumi.Input[str],
        role_arns: Mapping[str, pulumi.Output[str]] | None = None,
        storage_keys: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:k8s:Namespace", name, None, opts)
        ns = ctx.apply(lambda c: build_namespace(c.namespace, c.instance, c.kubernetes_version))
        self.namespace = k8s.core.v1.Namespace(name, metadata=ns["metadata"], opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        for account in SERVICE_ACCOUNTS:
            arn = (role_arns or {}).get(account)
            sa = pulumi.Output.all(ctx, arn).apply(partial(_service_account, account))
            k8s.core.v1.ServiceAccount(
                f"{name}-sa-{account}",
                metadata=sa["metadata"],
                automount_service_account_token=False,
                opts=child,
            )
        for builder in (build_default_deny, build_dns_egress, build_store_egress, build_database_egress):
            policy = ctx.apply(builder)
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{builder.__name__.removeprefix('build_').replace('_', '-')}",
                metadata=policy["metadata"],
                spec=policy["spec"],
                opts=child,
            )
        db = ctx.apply(lambda c: build_database_secret(c, ""))
        k8s.core.v1.Secret(
            f"{name}-{DATABASE_SECRET}",
            metadata=db["metadata"],
            type="Opaque",
            string_data={DATABASE_SECRET_KEY: pulumi.Output.secret(database_url)},
            opts=child,
        )
        if storage_keys is not None:
            store = ctx.apply(lambda c: build_storage_secret(c, "", ""))
            credentials: pulumi.Input[str] = pulumi.Output.all(*storage_keys).apply(_shared_credentials_file)
            k8s.core.v1.Secret(
                f"{name}-{STORAGE_SECRET}",
                metadata=store["metadata"],
                type="Opaque",
                string_data={STORAGE_SECRET_KEY: pulumi.Output.secret(credentials)},
                opts=child,
            )
        self.register_outputs({"namespace": ns["metadata"]["name"]})
