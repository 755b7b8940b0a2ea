"""Every Kubernetes object the program emits names the stack's stable Server-Side Apply field manager,
so a run can take over what an interrupted run created (the engine tests kill runs to show it)."""

from __future__ import annotations

import pytest

from infra.k8s.common import FIELD_MANAGER_ANNOTATION, with_field_manager
from infra.render import is_kubernetes_object
from tests.infra.harness import STACKS, cached_run


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_names_the_stacks_field_manager(stack: str) -> None:
    objects = [r for r in cached_run(stack).resources if is_kubernetes_object(r)]
    assert len(objects) > 20
    managers = {
        f"{r.type}::{r.name}": (r.inputs["metadata"].get("annotations") or {}).get(FIELD_MANAGER_ANNOTATION)
        for r in objects
    }
    assert set(managers.values()) == {f"purchase-classifier-{stack}"}, managers


def test_the_annotation_keeps_the_objects_own_annotations() -> None:
    meta = {"name": "serving", "annotations": {"a": "b"}}
    assert with_field_manager(meta, "m") == {
        "name": "serving",
        "annotations": {"a": "b", FIELD_MANAGER_ANNOTATION: "m"},
    }
    assert meta == {"name": "serving", "annotations": {"a": "b"}}


def test_metadata_that_is_not_a_mapping_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="expected an object's metadata as a mapping, got str"):
        with_field_manager("serving", "m")
