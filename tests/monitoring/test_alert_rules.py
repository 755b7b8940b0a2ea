"""The alert rules, checked and unit-tested by the real ``promtool``, and their runbook links.

The rules are rendered by :func:`infra.k8s.monitoring.rule_groups` exactly as the PrometheusRule
carries them; the promtool test files beside this module feed series to every alert and say when it
fires and when it stays quiet.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.config import Monitoring
from infra.k8s.monitoring import alerts, rule_groups
from tests.monitoring.engines import promtool_binary

HERE = Path(__file__).parent
PROMTOOL_TESTS = sorted((HERE / "promtool").glob("*.test.yaml"))
ROOT = HERE.parents[1]
RUNBOOK = ROOT / "docs" / "runbook.md"
TEST_NAMESPACE = "purchase-classifier"
"""The namespace and (default) thresholds the promtool test files are written for."""


def write_rules(directory: Path, namespace: str = TEST_NAMESPACE, mon: Monitoring | None = None) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(namespace, mon or Monitoring(), "docs/runbook.md")}))
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_binary(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    result = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(TEST_NAMESPACE, Monitoring()))} rules found" in result.stdout


@pytest.mark.parametrize("stack_file", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_every_stack_renders_rules_promtool_accepts(stack_file: Path, tmp_path: Path) -> None:
    workloads = yaml.safe_load(stack_file.read_text())["config"]["purchase-classifier:workloads"]
    mon = Monitoring.model_validate(workloads.get("monitoring", {}))
    rules = write_rules(tmp_path, workloads["namespace"], mon)
    result = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", PROMTOOL_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Path, tmp_path: Path) -> None:
    write_rules(tmp_path)
    shutil.copy(test_file, tmp_path / test_file.name)
    result = promtool("test", "rules", test_file.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The same tests against rules with a looser error SLO must fail: they can see a regression."""
    write_rules(tmp_path, mon=Monitoring(error_ratio=0.05))
    test_file = HERE / "promtool" / "serving.test.yaml"
    shutil.copy(test_file, tmp_path / test_file.name)
    result = promtool("test", "rules", test_file.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: ServingHighErrorRatio" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in PROMTOOL_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {a.name for a in alerts(TEST_NAMESPACE, Monitoring())}
    assert fires == names
    assert quiet == names


def test_every_rule_is_scoped_to_its_namespace_and_links_a_runbook() -> None:
    (group,) = rule_groups("ns-a", Monitoring(), "https://example.org/runbook.md")
    for rule in group["rules"]:
        selectors = re.findall(r"\{([^}]*)\}", rule["expr"])
        assert selectors and all('namespace="ns-a"' in s for s in selectors), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["runbook_url"] == f"https://example.org/runbook.md#{rule['alert'].lower()}"


# ------------------------------------------------------------------ runbook


def runbook_sections() -> dict[str, str]:
    """``## Heading`` sections of the runbook by the anchor Markdown renderers give them."""
    sections: dict[str, str] = {}
    anchor = None
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("## "):
            anchor = re.sub(r"[^a-z0-9 _-]", "", line[3:].strip().lower()).replace(" ", "-")
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections


def test_every_runbook_link_resolves_to_a_section_that_says_what_to_do() -> None:
    sections = runbook_sections()
    (group,) = rule_groups(TEST_NAMESPACE, Monitoring(), "docs/runbook.md")
    for rule in group["rules"]:
        path, anchor = rule["annotations"]["runbook_url"].split("#")
        assert (ROOT / path).resolve() == RUNBOOK.resolve()
        assert anchor in sections, f"{rule['alert']}: no '## {rule['alert']}' section in docs/runbook.md"
        body = sections[anchor]
        for part in ("What it means", "What to check", "What to do"):
            assert f"**{part}.**" in body, f"{rule['alert']}: its runbook section lacks '{part}'"


def test_the_runbook_has_no_section_for_an_alert_that_does_not_exist() -> None:
    names = {a.anchor for a in alerts(TEST_NAMESPACE, Monitoring())}
    alert_sections = {anchor for anchor in runbook_sections() if re.fullmatch(r"[a-z]+", anchor)}
    assert alert_sections == names
