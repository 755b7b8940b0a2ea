"""The GitHub workflows: schema-valid, clean under checkov's github_actions checks, and holding the
delivery rules the platform depends on (OIDC only, least privilege, SHA-pinned actions, no expression
inside ``run:``, digest recorded on main, promotion behind environments, each environment's jobs on
its own runners with its own roles, a bounded reachability check before every cluster operation,
scheduled drift detection).

GitHub itself is not available here, so "works" means: the files validate against the workflow
JSON schema bundled with check-jsonschema, pass a workflow linter from PyPI run offline, and say
what the delivery process needs, checked structurally.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
SHA_PIN = re.compile(r"^\s*(?:-\s+)?uses:\s+(?P<action>[^@\s]+)@(?P<ref>\S+)(?P<comment>.*)$")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the bare key `on` as a boolean
        data["on"] = data.pop(True)
    return dict(data)


def _workflow(name: str) -> dict[str, Any]:
    return _load(ROOT / ".github" / "workflows" / name)


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).split("@")[0] == action


ENVIRONMENTS = ("dev", "staging", "prod")


def test_there_are_four_workflows() -> None:
    assert {p.name for p in WORKFLOWS} == {"pull-request.yml", "deploy-dev.yml", "promote.yml", "drift.yml"}


def test_schema_valid() -> None:
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checkov_github_actions_offline() -> None:
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    proc = subprocess.run(
        [
            str(BIN / "checkov"),
            "--directory",
            str(ROOT / ".github" / "workflows"),
            "--framework",
            "github_actions",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    results = report["results"]
    failed = [f"{c['check_id']} {c['file_path']} {c['resource']}" for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 50  # the checks really ran
    assert report["summary"]["parsing_errors"] == 0
    # The one accepted skip is documented inline with its reason.
    skipped = {(c["check_id"], c["file_path"]) for c in results["skipped_checks"]}
    assert skipped <= {("CKV_GHA_7", "/promote.yml")}
    for check in results["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) > 40


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_pinned_by_commit_sha_with_version_comment(path: Path) -> None:
    pins = [m for line in path.read_text().splitlines() if (m := SHA_PIN.match(line))]
    assert pins
    for m in pins:
        if m["action"].startswith("./"):
            continue
        assert re.fullmatch(r"[0-9a-f]{40}", m["ref"]), f"{m['action']}@{m['ref']} is not a commit SHA"
        assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", m["comment"]), f"{m['action']}: want '# vX.Y.Z'"


def test_one_version_per_action_across_workflows() -> None:
    seen: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if m := SHA_PIN.match(line):
                seen.setdefault(m["action"], set()).add(m["ref"])
    assert {a: refs for a, refs in seen.items() if len(refs) > 1} == {}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_permissions(path: Path) -> None:
    workflow = _load(path)
    assert workflow["permissions"] == {}, "no default token scopes; each job asks for its own"
    for name, job in workflow["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict) and perms, f"job {name} must declare its permissions"
        assert "write-all" not in str(perms)
        allowed = {"contents", "id-token", "pull-requests"} | ({"issues"} if name == "report" else set())
        assert set(perms) <= allowed, f"job {name} asks for {set(perms) - allowed}"
        if perms.get("contents") == "write":
            assert any("git push" in str(s.get("run", "")) for s in job["steps"]), f"{name}: write unused"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_inside_run(path: Path) -> None:
    """Inputs and event fields reach shell steps only through ``env:`` (no script injection)."""
    for step in _steps(_load(path)):
        assert "${{" not in str(step.get("run", "")), f"expression in run: {step.get('name')}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_oidc_only(path: Path) -> None:
    text = path.read_text()
    for forbidden in ("secrets.", "aws-access-key-id", "aws-secret-access-key", "PULUMI_ACCESS_TOKEN"):
        assert forbidden not in text, f"{forbidden} in {path.name}: credentials must come from OIDC"
    workflow = _load(path)
    for name, job in workflow["jobs"].items():
        steps = job.get("steps", [])
        for step in steps:
            if _uses(step, "aws-actions/configure-aws-credentials"):
                assert step["with"]["role-to-assume"].startswith("${{ vars.")
                assert job["permissions"].get("id-token") == "write", name
            if _uses(step, "pulumi/actions"):
                auth = [s for s in steps if _uses(s, "pulumi/auth-actions")]
                assert auth and steps.index(auth[0]) < steps.index(step), f"{name}: OIDC login first"
                assert auth[0]["with"]["requested-token-type"].startswith("urn:pulumi:token-type:access_token")
                assert step["with"]["policyPacks"] == "policy"


def test_pull_request_workflow() -> None:
    workflow = _workflow("pull-request.yml")
    assert set(workflow["on"]) == {"pull_request"}
    jobs = workflow["jobs"]
    assert any(s.get("run") == "make test" for s in jobs["test"]["steps"])

    render = jobs["render"]
    runs = "\n".join(str(s.get("run", "")) for s in render["steps"])
    assert "python -m infra render" in runs and "python -m policy.scan" in runs and "checkov" in runs
    upload = [s for s in render["steps"] if _uses(s, "actions/upload-artifact")]
    assert upload and upload[0]["with"]["path"] == "render/"

    preview = jobs["preview"]
    assert preview["strategy"]["matrix"]["stack"] == list(ENVIRONMENTS)
    assert preview["permissions"]["pull-requests"] == "write"
    (pulumi,) = [s for s in preview["steps"] if _uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["stack-name"].endswith("/purchase-classifier/${{ matrix.stack }}")
    assert "head.repo.full_name == github.repository" in preview["if"]  # no OIDC for forks
    _assert_runs_in_its_environment(preview, "${{ matrix.stack }}", "-preview", "AWS_PREVIEW_ROLE_ARN")


def _assert_runs_in_its_environment(job: dict[str, Any], stack: str, suffix: str, role_variable: str) -> None:
    """The job's environment, runner label and role are the stack's; the cluster is checked first."""
    assert job["environment"] == f"{stack}{suffix}"
    assert job["runs-on"][:2] == ["self-hosted", "linux"] and job["runs-on"][2] == f"pc-{stack}"
    steps = job["steps"]
    roles = [s["with"]["role-to-assume"] for s in steps if _uses(s, "aws-actions/configure-aws-credentials")]
    assert roles[-1] == f"${{{{ vars.{role_variable} }}}}"
    reach = [i for i, s in enumerate(steps) if "python -m infra.reach --stack" in str(s.get("run", ""))]
    pulumi = [i for i, s in enumerate(steps) if _uses(s, "pulumi/actions")]
    assert reach and pulumi and reach[0] < pulumi[0], "check the cluster before Pulumi talks to it"
    assert job["timeout-minutes"] <= 60


def test_deploy_dev_workflow() -> None:
    workflow = _workflow("deploy-dev.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = "\n".join(str(s.get("run", "")) for s in build["steps"])
    assert "scripts/build-image" in runs and "--stack dev" in runs
    assert "git add Pulumi.dev.yaml" in runs and "git push origin HEAD:main" in runs
    assert deploy["needs"] == "build" and deploy["environment"] == "dev"
    (checkout,) = [s for s in deploy["steps"] if _uses(s, "actions/checkout")]
    assert checkout["with"]["ref"] == "${{ needs.build.outputs.commit }}", "deploy the recorded digest"
    (pulumi,) = [s for s in deploy["steps"] if _uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "up" and pulumi["with"]["stack-name"].endswith("/dev")
    _assert_runs_in_its_environment(deploy, "dev", "", "AWS_DEPLOY_ROLE_ARN")


def test_promote_workflow() -> None:
    workflow = _workflow("promote.yml")
    (trigger,) = workflow["on"]
    assert trigger == "workflow_dispatch"
    choice = workflow["on"]["workflow_dispatch"]["inputs"]["promotion"]
    assert choice["type"] == "choice" and choice["options"] == ["dev-to-staging", "staging-to-prod"]
    job = workflow["jobs"]["promote"]
    assert job["environment"] == "${{ inputs.promotion == 'staging-to-prod' && 'prod' || 'staging' }}"
    assert job["runs-on"] == [
        "self-hosted",
        "linux",
        "${{ inputs.promotion == 'staging-to-prod' && 'pc-prod' || 'pc-staging' }}",
    ]
    assert job["if"] == "github.ref == 'refs/heads/main'"
    assert job["env"]["DOCKER_CONFIG"] == "${{ runner.temp }}/docker"  # logins die with the job
    steps = job["steps"]
    runs = [str(s.get("run", "")) for s in steps]
    assert '.venv/bin/python -m infra promote --from "$FROM_STACK" --to "$TO_STACK"' in runs
    assert any("git push origin HEAD:main" in r for r in runs)
    (pulumi,) = [s for s in steps if _uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "up"
    assert pulumi["with"]["stack-name"].endswith("/${{ env.TO_STACK }}")

    # The order that lets one job read one account's registry and write another's:
    # source pull role -> stored login -> target push role -> promote (copy, verify, write) -> deploy.
    def at(predicate: Any) -> int:
        return next(i for i, s in enumerate(steps) if predicate(s))

    def role(variable: str) -> int:
        return at(lambda s: s.get("with", {}).get("role-to-assume") == f"${{{{ vars.{variable} }}}}")

    login = at(lambda s: "python -m infra.oci login" in str(s.get("run", "")))
    promote = at(lambda s: "infra promote" in str(s.get("run", "")))
    assert role("AWS_SOURCE_PULL_ROLE_ARN") < login < role("AWS_IMAGE_PUSH_ROLE_ARN") < promote
    assert promote < role("AWS_DEPLOY_ROLE_ARN") < steps.index(pulumi), "deploy what was promoted"
    reach = at(lambda s: 'python -m infra.reach --stack "$TO_STACK"' in str(s.get("run", "")))
    assert role("AWS_DEPLOY_ROLE_ARN") < reach < steps.index(pulumi)


def test_drift_workflow() -> None:
    workflow = _workflow("drift.yml")
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
    (schedule,) = workflow["on"]["schedule"]
    assert len(schedule["cron"].split()) == 5
    detect, report = workflow["jobs"]["detect"], workflow["jobs"]["report"]
    assert detect["strategy"]["matrix"]["stack"] == list(ENVIRONMENTS)
    assert detect["strategy"]["fail-fast"] is False  # one drifted environment must not hide another
    assert detect["permissions"] == {"contents": "read", "id-token": "write"}
    _assert_runs_in_its_environment(detect, "${{ matrix.stack }}", "-preview", "AWS_PREVIEW_ROLE_ARN")
    (pulumi,) = [s for s in detect["steps"] if _uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["refresh"] is True and pulumi["with"]["expect-no-changes"] is True

    assert report["needs"] == "detect" and report["if"] == "failure()"
    assert report["permissions"] == {"issues": "write"}
    script = "\n".join(str(s.get("run", "")) for s in report["steps"])
    assert "gh issue list --state open --label drift" in script
    assert "gh issue comment" in script and "gh issue create" in script


def test_environments_match_the_roles_the_bootstrap_program_trusts() -> None:
    """Every environment the workflows run in is one a bootstrap role trusts, and the reverse."""
    from bootstrap.program import BootstrapConfig, role_specs

    trusted: set[str] = set()
    for stack in ENVIRONMENTS:
        raw = yaml.safe_load((ROOT / "bootstrap" / f"Pulumi.{stack}.yaml").read_text())["config"]
        own = {key.split(":", 1)[1]: value for key, value in raw.items() if not key.startswith("aws:")}
        cfg = BootstrapConfig.model_validate(own)
        for spec in role_specs(cfg, "111122223333", "eu-west-1"):
            trusted |= {s.rsplit(":environment:", 1)[1] for s in spec.subjects if ":environment:" in s}
    used = {f"{stack}-preview" for stack in ENVIRONMENTS} | {"dev", "staging", "prod"}
    assert trusted == used
    assert _workflow("deploy-dev.yml")["jobs"]["deploy"]["environment"] == "dev"
