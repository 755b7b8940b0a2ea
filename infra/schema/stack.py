"""The whole stack file: everything under ``purchase-classifier:`` in a ``Pulumi.<stack>.yaml``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.catalog import PROMETHEUS_STACK_RELEASE
from infra.schema.alerting import Alerting
from infra.schema.base import Model, empty_to_none
from infra.schema.platform import Cluster, Ecr, Network, Protection, Storage
from infra.schema.workloads import Workloads

SECRET_KEYS: frozenset[str] = frozenset(
    {"alerting", "databaseUrl", "kubeconfig", "storageAccessKeyId", "storageSecretAccessKey"}
)
"""Top-level keys that must be set with ``pulumi config set --secret``."""

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class StackConfig(Model):
    """Everything under ``purchase-classifier:`` in a stack file."""

    environment: Literal["dev", "staging", "prod", "local"] = Field(
        description="Environment name, used in tags and resource names."
    )
    cluster: Cluster = Field(description="Cluster mode and EKS settings.")
    network: Network | None = Field(default=None, description="VPC settings (required in eks mode).")
    storage: Storage = Field(description="Object store settings.")
    ecr: Ecr = Field(default_factory=Ecr, description="ECR repository settings (eks mode).")
    protection: Protection = Field(
        default_factory=Protection, description="`protect`/`retainOnDelete` of the stateful resources (eks mode)."
    )
    registry: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+$",
        description="Image repository `<host>[:port]/<path>` (existing mode; eks mode uses its ECR).",
    )
    image_digest: str | None = Field(
        default=None,
        description="Classifier image digest `sha256:<64 hex>`; empty on a fresh stack (workloads skipped). "
        "Promotion copies it between stacks.",
    )
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL of the source/predictions DB (secret)."
    )
    kubeconfig: SecretStr | None = Field(
        default=None, description="Kubeconfig contents (secret, existing mode); default: the local one."
    )
    storage_access_key_id: SecretStr | None = Field(
        default=None, description="S3-compatible access key (secret, existing mode)."
    )
    storage_secret_access_key: SecretStr | None = Field(
        default=None, description="S3-compatible secret key (secret, existing mode)."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every AWS resource.")
    workloads: Workloads = Field(description="Kubernetes workloads (namespace, Dask, serving, jobs).")
    alerting: Alerting = Field(
        default_factory=Alerting,
        description="Alertmanager receivers by severity (secret: holds their URLs; eks mode with "
        "`workloads.monitoring.install`). See docs/operations.md.",
    )

    @field_validator("image_digest", mode="before")
    @classmethod
    def _digest(cls, value: Any) -> Any:
        value = empty_to_none(value)
        if value is not None and not (isinstance(value, str) and _DIGEST_RE.match(value)):
            raise ValueError(
                f"{value!r} is not an image digest; use 'sha256:<64 lowercase hex>' (tags are refused: "
                "stacks pin images by digest)"
            )
        return value

    @field_validator("registry", "database_url", "kubeconfig", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return empty_to_none(value)

    @model_validator(mode="after")
    def _mode_rules(self) -> StackConfig:
        if self.cluster.mode == "eks":
            if self.network is None:
                raise ValueError("network is required when cluster.mode is 'eks'")
            for key in ("registry", "kubeconfig", "storage_access_key_id", "storage_secret_access_key"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{to_camel(key)} is only used when cluster.mode is 'existing'")
            if self.storage.endpoint_url is not None:
                raise ValueError("storage.endpointUrl is only used when cluster.mode is 'existing'")
        else:
            if self.workloads.monitoring.install:
                raise ValueError(
                    "workloads.monitoring.install is only used when cluster.mode is 'eks': an existing cluster's "
                    f"platform services are yours; install the Prometheus Operator there (e.g. Helm release "
                    f"{PROMETHEUS_STACK_RELEASE!r}) and set install: false"
                )
            if self.registry is None:
                raise ValueError("registry is required when cluster.mode is 'existing'")
            if self.storage.bucket_name is None:
                raise ValueError("storage.bucketName is required when cluster.mode is 'existing'")
        if self.alerting.receivers and not self.workloads.monitoring.install:
            raise ValueError(
                "alerting is only used where the program installs Alertmanager (workloads.monitoring.install: "
                "true, eks mode); route an existing cluster's alerts in its own Alertmanager"
            )
        if self.image_digest is not None and self.database_url is None:
            raise ValueError(
                "databaseUrl is required once imageDigest is set (the jobs need it); set it with "
                "`pulumi config set --secret purchase-classifier:databaseUrl <url>`"
            )
        return self

    @property
    def is_eks(self) -> bool:
        """True when this stack creates the AWS platform."""
        return self.cluster.mode == "eks"
