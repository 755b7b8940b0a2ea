"""The preview identity (pull-request previews, the drift check) reads every object a stack manages
and no Secret. The real API server's verdict on the same rules is in tests/engine."""

from __future__ import annotations

import re

import pytest

from infra.k8s.preview_access import PREVIEW_READS, build_preview_binding, build_preview_role
from infra.naming import PREVIEW_GROUP, PREVIEW_REFRESH_EXCLUDES
from infra.render import kubernetes_manifests
from tests.infra.harness import STACKS, cached_run


def plural(kind: str) -> str:
    """The resource name of a kind, as the API server spells the ones the program declares."""
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


def readable(role: dict, group: str, resource: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and {"get", "list", "watch"} <= set(rule["verbs"])
        for rule in role["rules"]
    )


def urn_glob(glob: str) -> re.Pattern[str]:
    """Pulumi's ``--target``/``--exclude`` glob: ``**`` matches anything, ``*`` anything but ``:``."""
    parts = ("[^:]*".join(map(re.escape, segment.split("*"))) for segment in glob.split("**"))
    return re.compile("^" + ".*".join(parts) + "$")


@pytest.mark.parametrize("stack", STACKS)
def test_the_preview_role_reads_every_kind_the_stack_manages_but_secrets(stack: str) -> None:
    run = cached_run(stack)
    role = next(o for o in kubernetes_manifests(run) if o["kind"] == "ClusterRole")
    assert role["rules"] == build_preview_role(stack, "any")["rules"]
    for obj in kubernetes_manifests(run):
        group = obj["apiVersion"].rpartition("/")[0]
        assert readable(role, group, plural(obj["kind"])) is (obj["kind"] != "Secret"), obj["kind"]
    granted = {(group, r) for rule in role["rules"] for group in rule["apiGroups"] for r in rule["resources"]}
    assert all("*" not in g + r for g, r in granted) and ("", "secrets") not in granted
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    assert sum(len(kinds) for kinds in PREVIEW_READS.values()) == len(granted)


def test_the_binding_grants_the_role_to_the_preview_group_only() -> None:
    binding = build_preview_binding("dev", "dev")
    assert binding["roleRef"]["name"] == build_preview_role("dev", "dev")["metadata"]["name"]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": PREVIEW_GROUP}]


@pytest.mark.parametrize("stack", STACKS)
def test_the_refresh_excludes_match_the_secrets_and_helm_releases_and_nothing_else(stack: str) -> None:
    globs = [urn_glob(g) for g in PREVIEW_REFRESH_EXCLUDES]
    excluded = {r.type for r in cached_run(stack).resources if any(g.match(r.urn) for g in globs)}
    unreadable = {t for t in {r.type for r in cached_run(stack).resources} if t.endswith((":Secret", ":Release"))}
    assert excluded == unreadable and "kubernetes:core/v1:Secret" in excluded
