"""The base of every config model, the constrained string types, and CPU/memory quantities.

YAML keys are camelCase (Pulumi's convention); the Python attributes are snake_case.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from infra.quantity import cpu_millicores, memory_bytes

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CRON_FIELD_RE = re.compile(r"^[\d*/,\-A-Za-z?]+$")


def _check_cpu(value: str) -> str:
    if cpu_millicores(value) <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return value


def _check_memory(value: str) -> str:
    if memory_bytes(value) < 2**20:
        raise ValueError(f"{value!r} must be at least 1Mi (did you forget the unit, e.g. '512Mi'?)")
    return value


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL_RE.match(value):
        raise ValueError(f"{value!r} is not a DNS label (lowercase letters, digits, '-', at most 63)")
    return value


def _check_cron(value: str) -> str:
    fields = value.split()
    if value.startswith("@") or len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
        raise ValueError(f"{value!r} is not a 5-field cron schedule (e.g. '0 3 * * *')")
    return value


def _check_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block (e.g. '10.0.0.0/16'): {exc}") from exc
    if net.version != 4:
        raise ValueError(f"{value!r} must be an IPv4 CIDR block")
    return value


Cpu = Annotated[str, AfterValidator(_check_cpu)]
Memory = Annotated[str, AfterValidator(_check_memory)]
DnsLabel = Annotated[str, AfterValidator(_check_dns_label)]
Cron = Annotated[str, AfterValidator(_check_cron)]
Cidr = Annotated[str, AfterValidator(_check_cidr)]


class Model(BaseModel):
    """Base: camelCase keys in YAML, unknown keys rejected, immutable once parsed."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=False,
    )


class Quantities(Model):
    """CPU and memory quantities, in Kubernetes notation."""

    cpu: Cpu = Field(description="CPU, e.g. `250m` or `2`.")
    memory: Memory = Field(description="Memory, e.g. `512Mi` or `4Gi`.")


def empty_to_none(value: Any) -> Any:
    """Pulumi config cannot unset a key inside a file's history: an empty string means unset."""
    return None if value == "" else value
