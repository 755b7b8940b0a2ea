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
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.naming import PREVIEW_REFRESH_EXCLUDES

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


def _pulumi_operations(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Each Pulumi operation a job runs, through ``pulumi/actions`` (its inputs) or a ``pulumi
    <command>`` run step (its flags), as ``{"step", "command", "stack", "refresh", "policy_pack"}``."""
    operations = []
    for step in job.get("steps", []):
        if _uses(step, "pulumi/actions") and "command" in step["with"]:
            given = step["with"]
            stack, refresh, pack = given["stack-name"], bool(given.get("refresh")), given.get("policyPacks")
            operations.append(
                {"step": step, "command": given["command"], "stack": stack, "refresh": refresh, "policy_pack": pack}
            )
        elif str(step.get("run", "")).startswith("pulumi "):
            args = shlex.split(step["run"])
            stack = args[args.index("--stack") + 1].replace("$STACK_REF", step.get("env", {}).get("STACK_REF", ""))
            pack = args[args.index("--policy-pack") + 1] if "--policy-pack" in args else None
            operations.append(
                {"step": step, "command": args[1], "stack": stack, "refresh": "--refresh" in args, "policy_pack": pack}
            )
    return operations


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
def test_no_expression_inside_run(path: Path) -> None:
    """Inputs and event fields reach shell steps only through ``env:`` (no script injection)."""
    for step in _steps(_load(path)):
        assert "${{" not in str(step.get("run", "")), f"expression in run: {step.get('name')}"


# --- the delivery rules as checkers over a parsed workflow -----------------------------------------
# Each checker returns the problems it finds (empty when the rule holds). The tests run them over the
# committed workflows (no problem) and over the unsafe versions they replaced (kept below verbatim in
# spirit: the shapes issue 30 found), so a checker that stops catching its attack fails too.

DEPLOY_ENVIRONMENTS = frozenset(ENVIRONMENTS)
APP_TOKEN_ACTION = "actions/create-github-app-token"
ATTEST_ACTION = "actions/attest-build-provenance"
RECOVER = "python -m infra.engine recover --stack"


def _self_hosted(job: dict[str, Any]) -> bool:
    return "self-hosted" in str(job.get("runs-on", ""))


def _group(job: dict[str, Any]) -> str:
    runs_on = job.get("runs-on")
    return str(runs_on.get("group", "")) if isinstance(runs_on, dict) else ""


def _triggers(workflow: dict[str, Any]) -> set[str]:
    on = workflow["on"]
    return set(on) if isinstance(on, dict) else {on} if isinstance(on, str) else set(on)


def _only_main(workflow: dict[str, Any], job: dict[str, Any]) -> bool:
    """The job can only run for refs/heads/main: a push to main, or a dispatch gated on main."""
    triggers = _triggers(workflow)
    if triggers == {"push"}:
        return workflow["on"]["push"].get("branches") == ["main"]
    return job.get("if") == "github.ref == 'refs/heads/main'" and triggers <= {"workflow_dispatch", "push"}


def runner_problems(name: str, workflow: dict[str, Any]) -> list[str]:
    """Self-hosted jobs run on ephemeral runners of a group that matches their trust: branch code
    (pull requests, anything dispatchable from a branch) on ``pc-*-preview``, and ``pc-*-deploy``
    only for deploy-dev.yml / promote.yml jobs that run for main alone."""
    from bootstrap.github import DEPLOY_WORKFLOW, RUNNER_LABELS

    problems = []
    for job_name, job in workflow["jobs"].items():
        if not _self_hosted(job):
            continue
        where = f"{name}:{job_name}"
        group = _group(job)
        if not group:
            problems.append(f"{where}: self-hosted without a runner group (shares runners by label)")
            continue
        if list(job["runs-on"].get("labels", [])) != list(RUNNER_LABELS):
            problems.append(f"{where}: labels must be {list(RUNNER_LABELS)} (ephemeral runners only)")
        groups = set(re.findall(r"pc-[a-z]+-(?:preview|deploy)", group)) or set(
            re.findall(r"pc-\$\{\{[^}]*\}\}-\w+", group)
        )
        if "-deploy" in group:
            allowed = {f"pc-{stack}-deploy" for stack, wf in DEPLOY_WORKFLOW.items() if wf == name}
            if not groups or not groups <= allowed:
                problems.append(f"{where}: deploy runner group {group!r} does not accept {name}")
            if not _only_main(workflow, job):
                problems.append(f"{where}: deploy runners for a job that can run on another ref")
        elif not group.endswith("-preview"):
            problems.append(f"{where}: unknown runner group {group!r}")
    return problems


def token_problems(name: str, workflow: dict[str, Any]) -> list[str]:
    """Pulumi tokens are team tokens named by the job's environment, never organization tokens; a job
    without an environment (a plain branch or pull_request subject) gets no Pulumi token at all."""
    problems = []
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            if not _uses(step, "pulumi/auth-actions"):
                continue
            where = f"{name}:{job_name}"
            if step["with"].get("requested-token-type") != "urn:pulumi:token-type:access_token:team":
                problems.append(f"{where}: asks for {step['with'].get('requested-token-type')}, not a team token")
            if step["with"].get("scope") != "team:${{ vars.PULUMI_TEAM }}":
                problems.append(f"{where}: the team must come from the environment's PULUMI_TEAM")
            if "environment" not in job:
                problems.append(f"{where}: Pulumi token outside a GitHub environment")
    return problems


def _pushes(step: dict[str, Any]) -> bool:
    """A ``git [-c ...] push`` anywhere in the step's script."""
    return re.search(r"\bgit\b[^\n]*\spush\s", str(step.get("run", "")) + "\n") is not None


def push_problems(name: str, workflow: dict[str, Any]) -> list[str]:
    """Nothing pushes to main as github-actions[bot] (the GITHUB_TOKEN every workflow holds): only the
    digest-recorder App, whose key is a secret of the deploy environments, after a successful `up`."""
    problems = []
    text = yaml.safe_dump(workflow)
    if "github-actions[bot]" in text:
        problems.append(f"{name}: commits as github-actions[bot]")
    for job_name, job in workflow["jobs"].items():
        where = f"{name}:{job_name}"
        perms = job.get("permissions", {})
        if perms.get("contents") == "write" or "write-all" in str(perms):
            problems.append(f"{where}: the job's GITHUB_TOKEN can write the repository")
        steps = job.get("steps", [])
        for i, step in enumerate(steps):
            if "secrets." in yaml.safe_dump(step) and not _uses(step, APP_TOKEN_ACTION):
                problems.append(f"{where}: a secret outside the App-token step")
            if _uses(step, APP_TOKEN_ACTION) and job.get("environment") not in DEPLOY_ENVIRONMENTS | {
                "${{ inputs.promotion == 'staging-to-prod' && 'prod' || 'staging' }}"
            }:
                problems.append(f"{where}: the App token outside a deploy environment")
            if not _pushes(step):
                continue
            if "steps.app.outputs.token" not in str(step.get("env", {})):
                problems.append(f"{where}: pushes without the App's token")
            ups = [j for j, s in enumerate(steps) if _uses(s, "pulumi/actions") and s["with"]["command"] == "up"]
            if not ups or ups[0] > i:
                problems.append(f"{where}: pushes the digest before pulumi up succeeded")
    return problems


def concurrency_problems(name: str, workflow: dict[str, Any]) -> list[str]:
    """Every job that updates or refreshes a stack holds that stack's group, ``stack-<stack>`` (a pull
    request's preview reads the state only, and may run beside them)."""
    problems = []
    for job_name, job in workflow["jobs"].items():
        stacks = [op["stack"] for op in _pulumi_operations(job) if op["command"] == "up" or op["refresh"]]
        if not stacks:
            continue
        group = str((job.get("concurrency") or workflow.get("concurrency") or {}).get("group", ""))
        ref = stacks[0] if "STACK_REF" not in stacks[0] else str(job.get("env", {}).get("STACK_REF", ""))
        stack = ref.split("/purchase-classifier/", 1)[-1]
        expected = {
            "${{ matrix.stack }}": "stack-${{ matrix.stack }}",
            "dev": "stack-dev",
            "${{ inputs.promotion == 'staging-to-prod' && 'prod' || 'staging' }}": (
                "stack-${{ inputs.promotion == 'staging-to-prod' && 'prod' || 'staging' }}"
            ),
        }.get(stack)
        if group != expected:
            problems.append(f"{name}:{job_name}: concurrency group {group!r}, want {expected!r}")
    return problems


def _makefile_uv() -> str:
    return re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)[1]  # type: ignore[index]


def _engine_pulumi() -> str:
    return re.search(r"pulumi/pkg/v3 v(\S+)", (ROOT / "engine/pulumi/go.mod").read_text())[1]  # type: ignore[index]


def pin_problems(name: str, workflow: dict[str, Any]) -> list[str]:
    """setup-uv installs the Makefile's uv, pulumi/actions the engine's Pulumi CLI: no "latest"."""
    problems = []
    for step in _steps(workflow):
        if _uses(step, "astral-sh/setup-uv") and step.get("with", {}).get("version") != _makefile_uv():
            problems.append(f"{name}: setup-uv without version {_makefile_uv()}")
        if _uses(step, "pulumi/actions") and step["with"].get("pulumi-version") != _engine_pulumi():
            problems.append(f"{name}: pulumi/actions without pulumi-version {_engine_pulumi()}")
    return problems


CHECKERS = (runner_problems, token_problems, push_problems, concurrency_problems, pin_problems)


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_committed_workflows_hold_every_rule(path: Path, checker: Any) -> None:
    assert checker(path.name, _load(path)) == []


def _unsafe(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    data["on"] = data.pop(True)
    return dict(data)


# The preview job as it was: the PR's code on the persistent runner deploys also use, with an
# organization (admin) Pulumi token.
UNSAFE_PREVIEW = """
on: {pull_request: {branches: [main]}}
concurrency: {group: pr-1, cancel-in-progress: true}
jobs:
  preview:
    runs-on: [self-hosted, linux, "pc-${{ matrix.stack }}"]
    environment: ${{ matrix.stack }}-preview
    permissions: {contents: read, id-token: write}
    steps:
      - uses: astral-sh/setup-uv@d0cc045d04ccac9d8b7881df0226f9e82c39688e
        with: {python-version: "3.11"}
      - uses: pulumi/auth-actions@141415910c3beb54e03b48e9057c204c97b956f2
        with:
          organization: ${{ vars.PULUMI_ORG }}
          requested-token-type: urn:pulumi:token-type:access_token:organization
      - uses: pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d
        with: {command: preview, stack-name: "${{ vars.PULUMI_ORG }}/purchase-classifier/${{ matrix.stack }}"}
"""

# The build job as it was: commits the digest as github-actions[bot] with a contents: write token,
# before dev's `pulumi up` ran.
UNSAFE_RECORD = """
on: {push: {branches: [main]}}
concurrency: {group: deploy-dev}
jobs:
  build:
    runs-on: ubuntu-24.04
    permissions: {contents: write, id-token: write}
    steps:
      - run: |
          git config user.name "github-actions[bot]"
          git commit -m "deploy(dev): image $DIGEST"
          git push origin HEAD:main
"""

# promote.yml as it was: the digest pushed before `up`, on the runner label the previews share,
# and a deploy runner for a dispatch from any branch.
UNSAFE_PROMOTE = """
on: {workflow_dispatch: {}}
concurrency: {group: promote}
jobs:
  promote:
    runs-on: {group: pc-prod-deploy, labels: [self-hosted, linux, ephemeral]}
    environment: prod
    permissions: {contents: write, id-token: write}
    env: {STACK_REF: "${{ vars.PULUMI_ORG }}/purchase-classifier/prod"}
    steps:
      - run: git pull --rebase origin main && git push origin HEAD:main
      - uses: pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d
        with: {command: up, stack-name: "${{ env.STACK_REF }}", pulumi-version: "3.224.0"}
"""

# drift.yml as it was: a workflow-wide group of its own, so it reads a deploy in progress as drift.
UNSAFE_DRIFT = """
on: {schedule: [{cron: "17 5 * * *"}], workflow_dispatch: {}}
concurrency: {group: drift}
jobs:
  detect:
    runs-on: {group: "pc-${{ matrix.stack }}-preview", labels: [self-hosted, linux, ephemeral]}
    environment: ${{ matrix.stack }}-preview
    steps:
      - uses: pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d
        with:
          command: preview
          refresh: true
          stack-name: ${{ vars.PULUMI_ORG }}/purchase-classifier/${{ matrix.stack }}
"""


# A pull-request job that mints the App's token: branch code holding the one identity that can push
# to main.
UNSAFE_APP_IN_PREVIEW = """
on: {pull_request: {}}
jobs:
  preview:
    runs-on: ubuntu-24.04
    environment: ${{ matrix.stack }}-preview
    permissions: {contents: read}
    steps:
      - id: app
        uses: actions/create-github-app-token@bcd2ba49218906704ab6c1aa796996da409d3eb1
        with: {app-id: "${{ vars.DIGEST_APP_ID }}", private-key: "${{ secrets.DIGEST_APP_PRIVATE_KEY }}"}
"""


@pytest.mark.parametrize(
    ("checker", "name", "unsafe", "found"),
    [
        (push_problems, "pull-request.yml", UNSAFE_APP_IN_PREVIEW, "the App token outside a deploy environment"),
        (runner_problems, "pull-request.yml", UNSAFE_PREVIEW, "without a runner group"),
        (token_problems, "pull-request.yml", UNSAFE_PREVIEW, "not a team token"),
        (pin_problems, "pull-request.yml", UNSAFE_PREVIEW, "setup-uv without version"),
        (pin_problems, "pull-request.yml", UNSAFE_PREVIEW, "without pulumi-version"),
        (push_problems, "deploy-dev.yml", UNSAFE_RECORD, "github-actions[bot]"),
        (push_problems, "deploy-dev.yml", UNSAFE_RECORD, "can write the repository"),
        (push_problems, "deploy-dev.yml", UNSAFE_RECORD, "before pulumi up"),
        (push_problems, "promote.yml", UNSAFE_PROMOTE, "before pulumi up"),
        (push_problems, "promote.yml", UNSAFE_PROMOTE, "without the App's token"),
        (runner_problems, "promote.yml", UNSAFE_PROMOTE, "can run on another ref"),
        (runner_problems, "pull-request.yml", UNSAFE_PROMOTE, "does not accept pull-request.yml"),
        (concurrency_problems, "promote.yml", UNSAFE_PROMOTE, "'promote'"),
        (concurrency_problems, "drift.yml", UNSAFE_DRIFT, "'drift'"),
    ],
)
def test_the_checkers_reject_the_unsafe_versions(checker: Any, name: str, unsafe: str, found: str) -> None:
    problems = checker(name, _unsafe(unsafe))
    assert any(found in p for p in problems), problems


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_permissions(path: Path) -> None:
    workflow = _load(path)
    assert workflow["permissions"] == {}, "no default token scopes; each job asks for its own"
    for name, job in workflow["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict) and perms, f"job {name} must declare its permissions"
        allowed = {"contents", "id-token", "pull-requests", "attestations"} | (
            {"issues"} if name == "report" else set()
        )
        assert set(perms) <= allowed, f"job {name} asks for {set(perms) - allowed}"
        assert perms.get("contents") in (None, "read"), f"{name}: only the digest-recorder App writes"
        if perms.get("attestations") == "write":
            assert any(_uses(s, ATTEST_ACTION) for s in job["steps"]), f"{name}: write unused"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_oidc_only(path: Path) -> None:
    """Every credential is short-lived from OIDC; the one stored secret is the App key (see push_problems)."""
    text = path.read_text()
    for forbidden in ("aws-access-key-id", "aws-secret-access-key", "PULUMI_ACCESS_TOKEN"):
        assert forbidden not in text, f"{forbidden} in {path.name}: credentials must come from OIDC"
    assert set(re.findall(r"secrets\.(\w+)", text)) <= {"DIGEST_APP_PRIVATE_KEY"}
    workflow = _load(path)
    for name, job in workflow["jobs"].items():
        steps = job.get("steps", [])
        for step in steps:
            if _uses(step, "aws-actions/configure-aws-credentials"):
                assert step["with"]["role-to-assume"].startswith("${{ vars.")
                assert job["permissions"].get("id-token") == "write", name
        for op in _pulumi_operations(job):
            auth = [s for s in steps if _uses(s, "pulumi/auth-actions")]
            assert auth and steps.index(auth[0]) < steps.index(op["step"]), f"{name}: OIDC login first"
            assert op["policy_pack"] == "policy"


def _cluster_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path.name, name, job)
        for path in WORKFLOWS
        for name, job in _load(path)["jobs"].items()
        if _pulumi_operations(job)
    ]


@pytest.mark.parametrize(("workflow", "name", "job"), _cluster_jobs(), ids=lambda v: v if isinstance(v, str) else "")
def test_cluster_jobs_install_the_infra_group_with_the_aws_cli(workflow: str, name: str, job: dict[str, Any]) -> None:
    """The kubeconfig runs `aws eks get-token`: the jobs get it from the same locked `infra` group the
    project's set-up installs, before anything talks to a cluster."""
    runs = [str(s.get("run", "")) for s in job["steps"]]
    sync = [i for i, r in enumerate(runs) if "uv sync --frozen" in r and "--group infra" in r]
    reach = [i for i, r in enumerate(runs) if "python -m infra.reach" in r]
    assert sync and reach and sync[0] < reach[0], f"{workflow}:{name}"
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["infra"]
    assert any(re.match(r"awscli\b", str(req)) for req in groups), "the infra group must carry awscli"


@pytest.mark.parametrize(("workflow", "name", "job"), _cluster_jobs(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_failed_up_names_the_recovery_for_a_stale_lock(workflow: str, name: str, job: dict[str, Any]) -> None:
    steps = job["steps"]
    (operation,) = _pulumi_operations(job)
    if operation["command"] != "up":
        return
    pulumi = operation["step"]
    assert pulumi.get("id") == "up"
    after = steps[steps.index(pulumi) + 1 :]
    explain = [s for s in after if RECOVER in str(s.get("run", ""))]
    assert explain, f"{workflow}:{name}: no step prints `{RECOVER} <stack>`"
    assert explain[0]["if"] == "failure() && steps.up.outcome == 'failure'"
    script = str(explain[0]["run"])
    assert '"in-progress"' in script and "pulumi stack history" in script  # only for a lock, not any failure
    assert "pulumi cancel --stack" in script  # the released CLI's way


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
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    (pulumi,) = [s for s in preview["steps"] if _uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["stack-name"].endswith("/purchase-classifier/${{ matrix.stack }}")
    assert "head.repo.full_name == github.repository" in preview["if"]  # no OIDC for forks
    _assert_runs_in_its_environment(preview, "${{ matrix.stack }}", "-preview", "AWS_PREVIEW_ROLE_ARN")


def _assert_runs_in_its_environment(job: dict[str, Any], stack: str, suffix: str, role_variable: str) -> None:
    """The job's environment, runner group and role are the stack's; the cluster is checked first."""
    assert job["environment"] == f"{stack}{suffix}"
    kind = "preview" if suffix == "-preview" else "deploy"
    assert job["runs-on"] == {"group": f"pc-{stack}-{kind}", "labels": ["self-hosted", "linux", "ephemeral"]}
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
    # The build attests the pushed digest; it records nothing (dev has not run it yet).
    runs = "\n".join(str(s.get("run", "")) for s in build["steps"])
    assert "scripts/build-image" in runs and "--stack" not in runs
    assert not any(_pushes(s) for s in build["steps"])
    (attest,) = [s for s in build["steps"] if _uses(s, ATTEST_ACTION)]
    assert attest["with"]["subject-digest"] == "${{ steps.image.outputs.digest }}"
    assert build["permissions"] == {"contents": "read", "id-token": "write", "attestations": "write"}
    assert "DIGEST_APP_SLUG" in build["if"]  # the App's record commit starts no new build

    assert deploy["needs"] == "build" and deploy["environment"] == "dev"
    assert deploy["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    steps = deploy["steps"]
    runs_at = [str(s.get("run", "")) for s in steps]
    (pulumi,) = [s for s in steps if _uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "up" and pulumi["with"]["stack-name"] == "${{ env.STACK_REF }}"
    assert deploy["env"]["STACK_REF"].endswith("/purchase-classifier/dev")
    stale = next(i for i, r in enumerate(runs_at) if "compare/$GITHUB_SHA...main" in r)
    set_digest = next(i for i, r in enumerate(runs_at) if 'python -m infra promote --digest "$DIGEST"' in r)
    push = next(i for i, s in enumerate(steps) if _pushes(s))
    assert stale < set_digest < steps.index(pulumi) < push, "refuse old runs; record only what dev runs"
    _assert_runs_in_its_environment(deploy, "dev", "", "AWS_DEPLOY_ROLE_ARN")


def test_promote_workflow() -> None:
    workflow = _workflow("promote.yml")
    (trigger,) = workflow["on"]
    assert trigger == "workflow_dispatch"
    choice = workflow["on"]["workflow_dispatch"]["inputs"]["promotion"]
    assert choice["type"] == "choice" and choice["options"] == ["dev-to-staging", "staging-to-prod"]
    job = workflow["jobs"]["promote"]
    assert job["environment"] == "${{ inputs.promotion == 'staging-to-prod' && 'prod' || 'staging' }}"
    assert job["runs-on"] == {
        "group": "${{ inputs.promotion == 'staging-to-prod' && 'pc-prod-deploy' || 'pc-staging-deploy' }}",
        "labels": ["self-hosted", "linux", "ephemeral"],
    }
    assert job["if"] == "github.ref == 'refs/heads/main'"
    assert job["env"]["DOCKER_CONFIG"] == "${{ runner.temp }}/docker"  # logins die with the job
    assert job["permissions"] == {"contents": "read", "id-token": "write", "attestations": "read"}
    steps = job["steps"]
    (checkout,) = [s for s in steps if _uses(s, "actions/checkout")]
    assert checkout["with"]["ref"] == "${{ github.sha }}", "deploy the commit the reviewers approved"
    runs = [str(s.get("run", "")) for s in steps]
    assert not any("git pull" in r for r in runs), "never deploy a later tip of main"
    (promote_run,) = [r for r in runs if "python -m infra promote" in r]
    for flag in ('--from "$FROM_STACK" --to "$TO_STACK"', "--attestation ", "--trusted-root ", "--signer-repository "):
        assert flag in promote_run
    (pulumi,) = [s for s in steps if _uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "up"

    # The order that lets one job read one account's registry and write another's:
    # attestations -> source pull role -> stored login -> target push role -> promote (provenance,
    # copy, verify, set) -> deploy role -> reach -> up -> record.
    def at(predicate: Any) -> int:
        return next(i for i, s in enumerate(steps) if predicate(s))

    def role(variable: str) -> int:
        return at(lambda s: s.get("with", {}).get("role-to-assume") == f"${{{{ vars.{variable} }}}}")

    fetch = at(lambda s: 'gh api "repos/$GITHUB_REPOSITORY/attestations/' in str(s.get("run", "")))
    login = at(lambda s: "python -m infra.oci login" in str(s.get("run", "")))
    promote = at(lambda s: "infra promote" in str(s.get("run", "")))
    push = at(_pushes)
    assert fetch < role("AWS_SOURCE_PULL_ROLE_ARN") < login < role("AWS_IMAGE_PUSH_ROLE_ARN") < promote
    assert promote < role("AWS_DEPLOY_ROLE_ARN") < steps.index(pulumi) < push, "record what the target runs"
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
    (install,) = [s for s in detect["steps"] if _uses(s, "pulumi/actions")]
    assert "command" not in install["with"]  # installs the CLI only
    (preview,) = [s for s in detect["steps"] if "pulumi preview" in s.get("run", "")]
    assert detect["steps"].index(install) < detect["steps"].index(preview)
    args = shlex.split(preview["run"])
    assert {"--refresh", "--expect-no-changes"} <= set(args) and args[args.index("--stack") + 1] == "$STACK_REF"
    # Exactly what the preview group cannot read (tests/engine proves the refresh needs it).
    assert [args[i + 1] for i, a in enumerate(args) if a == "--exclude"] == list(PREVIEW_REFRESH_EXCLUDES)

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


def test_runner_groups_and_environments_are_the_ones_bootstrap_declares() -> None:
    """The groups the workflows name exist in bootstrap.github, and each deploy group admits exactly
    the workflow that uses it, on main; deploy environments admit main only and hold the App key."""
    from bootstrap.github import environments, runner_groups

    repo = "example-org/purchase-classifier"
    declared = {g["name"]: g for stack in ENVIRONMENTS for g in runner_groups(repo, stack)}
    for path in WORKFLOWS:
        for job in _load(path)["jobs"].values():
            group = _group(job)
            if not group:
                continue
            for stack in ENVIRONMENTS:
                name = re.sub(r"\$\{\{[^}]*\}\}", stack, group) if "matrix" in group else group
                for candidate in {name} | set(re.findall(r"pc-[a-z]+-\w+", group)):
                    if candidate.startswith(f"pc-{stack}-"):
                        assert candidate in declared, candidate
                        g = declared[candidate]
                        if candidate.endswith("-deploy"):
                            assert g["restricted_to_workflows"] is True
                            assert g["selected_workflows"] == [f"{repo}/.github/workflows/{path.name}@refs/heads/main"]
    for stack in ENVIRONMENTS:
        preview, deploy = environments(stack)
        assert preview["secrets"] == [] and deploy["secrets"] == ["DIGEST_APP_PRIVATE_KEY"]
        assert deploy["deployment_branches"] == ["main"] and deploy["reviewers"] is (stack != "dev")


def test_pulumi_issuer_gives_each_exact_subject_one_team_and_pull_requests_nothing() -> None:
    from bootstrap.github import pulumi_issuer_policies, pulumi_teams

    repo, org = "example-org/purchase-classifier", "example-org"
    policies = pulumi_issuer_policies(repo, org)
    subjects = [p["rules"]["sub"] for p in policies]
    assert len(subjects) == len(set(subjects)) == 6
    for policy in policies:
        assert policy["decision"] == "allow" and policy["tokenType"] == "team"
        assert set(policy["rules"]) == {"aud", "sub"} and policy["rules"]["aud"] == f"urn:pulumi:org:{org}"
        sub = policy["rules"]["sub"]
        assert "*" not in sub and ":pull_request" not in sub and ":ref:" not in sub
        environment = sub.rsplit(":environment:", 1)[1]
        stack = environment.removesuffix("-preview")
        access = pulumi_teams(stack)[policy["teamName"]]
        assert access == ("read" if environment.endswith("-preview") else "write"), sub


def test_bootstrap_github_prints_a_stacks_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from bootstrap.github import main

    assert main(["--repository", "o/r", "--pulumi-org", "o", "--stack", "prod"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in printed["runnerGroups"]] == ["pc-prod-preview", "pc-prod-deploy"]
    assert printed["runnerGroups"][1]["selected_workflows"] == ["o/r/.github/workflows/promote.yml@refs/heads/main"]
    assert {p["rules"]["sub"] for p in printed["pulumiIssuerPolicies"]} == {
        "repo:o/r:environment:prod-preview",
        "repo:o/r:environment:prod",
    }
