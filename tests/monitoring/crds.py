"""Validation of ``monitoring.coreos.com`` objects against the Prometheus Operator's own CRD schemas.

The API server validates a custom resource against its CRD's ``openAPIV3Schema`` and, with strict
field validation (``kubectl``'s default), refuses unknown fields; this does the same offline, so a
misspelt field fails here instead of being pruned silently by the cluster.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema
import yaml

from tests.monitoring.engines import operator_crd_dir

GROUP = "monitoring.coreos.com"


def is_prometheus_operator_object(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith(f"{GROUP}/")


class _CrdLoader(yaml.SafeLoader):
    """A plain ``=`` (an enum value of the matchers) is YAML 1.1's value tag to PyYAML: read it as text."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)


@cache
def _crds() -> dict[str, dict[str, Any]]:
    """Every CRD of the operator by kind."""
    crds = {}
    for path in operator_crd_dir().glob(f"{GROUP}_*.yaml"):
        crd = yaml.load(path.read_text(), Loader=_CrdLoader)
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists the fields of an object."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@cache
def _validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    crd = _crds().get(kind)
    if crd is None:
        raise AssertionError(f"{GROUP} has no kind {kind!r}; it has {sorted(_crds())}")
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in served:
        raise AssertionError(f"{kind} is not served as {GROUP}/{version}; served versions: {sorted(served)}")
    schema = _closed(copy.deepcopy(served[version]["schema"]["openAPIV3Schema"]))
    # The API server checks metadata itself; the CRD leaves it a plain object.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """Raise :class:`AssertionError` naming every field of ``obj`` its CRD schema refuses."""
    group_version = obj["apiVersion"]
    if not is_prometheus_operator_object(obj):
        raise AssertionError(f"{group_version} is not a {GROUP} object")
    validator = _validator(obj["kind"], group_version.split("/", 1)[1])
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        name = obj.get("metadata", {}).get("name")
        lines = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise AssertionError(f"{obj['kind']}/{name}:\n  " + "\n  ".join(lines))
