"""Promotion copies the digest and only the digest, keeps the files as people wrote them, refuses loudly.

Runs on copies of the committed stack files in ``tmp_path`` so the real comments, flow maps and
quoting are what the round-trip has to survive.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.promote import (
    DIGEST_KEY,
    EXIT_DIFFERS,
    EXIT_OK,
    EXIT_REFUSED,
    ROOT,
    PromotionError,
    main,
    promote,
    read_digest,
    set_digest,
)

DIGEST_A = "sha256:" + "a1" * 32
DIGEST_B = "sha256:" + "b2" * 32


@pytest.fixture
def stacks(tmp_path: Path) -> Path:
    for path in ROOT.glob("Pulumi.*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def _changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_committed_stack_files_have_the_digest_key() -> None:
    for stack in ("dev", "staging", "prod", "local"):
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
        assert DIGEST_KEY in data["config"], stack


def test_promote_changes_exactly_one_line_and_keeps_comments(stacks: Path) -> None:
    set_digest("dev", DIGEST_A, stacks)
    before = (stacks / "Pulumi.staging.yaml").read_text()
    change = promote("dev", "staging", stacks)
    after = (stacks / "Pulumi.staging.yaml").read_text()

    assert change.changed and change.old == "" and change.new == DIGEST_A
    diff = _changed_lines(before, after)
    assert len(diff) == 2, diff
    assert diff[0].startswith("-") and DIGEST_KEY in diff[0]
    assert diff[1].startswith("+") and DIGEST_A in diff[1]
    # Comments survive (the file's header and the per-key note).
    assert "# Copied from dev by the promote tool" in after
    assert after.splitlines()[0] == before.splitlines()[0]
    assert read_digest("staging", stacks) == DIGEST_A


def test_only_the_digest_travels(stacks: Path) -> None:
    set_digest("staging", DIGEST_A, stacks)
    dev_before = yaml.safe_load((stacks / "Pulumi.dev.yaml").read_text())
    prod_before = yaml.safe_load((stacks / "Pulumi.prod.yaml").read_text())
    promote("staging", "prod", stacks)
    prod_after = yaml.safe_load((stacks / "Pulumi.prod.yaml").read_text())

    assert prod_after["config"].pop(DIGEST_KEY) == DIGEST_A
    prod_before["config"].pop(DIGEST_KEY)
    assert prod_after == prod_before
    # The source is untouched; environment-specific values differ and stay different.
    assert yaml.safe_load((stacks / "Pulumi.dev.yaml").read_text()) == dev_before
    assert prod_after["config"]["purchase-classifier:cluster"]["name"] == "pc-prod"


def test_promote_is_idempotent(stacks: Path) -> None:
    set_digest("dev", DIGEST_A, stacks)
    promote("dev", "staging", stacks)
    text = (stacks / "Pulumi.staging.yaml").read_text()
    again = promote("dev", "staging", stacks)
    assert not again.changed
    assert (stacks / "Pulumi.staging.yaml").read_text() == text


def test_refuses_when_source_has_no_digest(stacks: Path) -> None:
    before = (stacks / "Pulumi.staging.yaml").read_text()
    with pytest.raises(PromotionError, match="source stack 'dev' has no image digest"):
        promote("dev", "staging", stacks)
    assert (stacks / "Pulumi.staging.yaml").read_text() == before


def test_refuses_when_target_stack_missing(stacks: Path) -> None:
    set_digest("dev", DIGEST_A, stacks)
    with pytest.raises(PromotionError, match=r"target stack 'qa' does not exist: no Pulumi\.qa\.yaml"):
        promote("dev", "qa", stacks)
    assert not (stacks / "Pulumi.qa.yaml").exists()


def test_refuses_when_source_stack_missing(stacks: Path) -> None:
    with pytest.raises(PromotionError, match="source stack 'qa' does not exist"):
        promote("qa", "staging", stacks)


@pytest.mark.parametrize("bad", ["latest", "v1.2.3", "sha256:abc", "sha256:" + "G" * 64, "sha256:" + "AB" * 32])
def test_refuses_tags_and_malformed_digests(stacks: Path, bad: str) -> None:
    with pytest.raises(PromotionError, match="is not 'sha256:<64 lowercase hex>'"):
        set_digest("dev", bad, stacks)
    (stacks / "Pulumi.dev.yaml").write_text(
        (stacks / "Pulumi.dev.yaml").read_text().replace(f'{DIGEST_KEY}: ""', f'{DIGEST_KEY}: "{bad}"')
    )
    with pytest.raises(PromotionError, match="source stack 'dev'"):
        promote("dev", "staging", stacks)


def test_refuses_same_stack_and_path_like_names(stacks: Path) -> None:
    with pytest.raises(PromotionError, match="needs two stacks"):
        promote("dev", "dev", stacks)
    with pytest.raises(PromotionError, match="not a valid Pulumi stack name"):
        set_digest("../dev", DIGEST_A, stacks)


def test_target_without_the_key_gets_it_after_environment(stacks: Path) -> None:
    path = stacks / "Pulumi.staging.yaml"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if DIGEST_KEY not in line) + "\n")
    set_digest("staging", DIGEST_B, stacks)
    keys = list(yaml.safe_load(path.read_text())["config"])
    assert keys[keys.index("purchase-classifier:environment") + 1] == DIGEST_KEY


def test_cli_check_reports_difference_then_sync(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(stacks)]
    assert main(["--digest", DIGEST_A, "--to", "dev", *root]) == EXIT_OK
    before = (stacks / "Pulumi.staging.yaml").read_text()

    assert main(["--from", "dev", "--to", "staging", "--check", *root]) == EXIT_DIFFERS
    assert "staging: differs" in capsys.readouterr().out
    assert (stacks / "Pulumi.staging.yaml").read_text() == before  # --check writes nothing

    assert main(["--from", "dev", "--to", "staging", *root]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"staging: imageDigest (unset) -> {DIGEST_A}" in out

    assert main(["--from", "dev", "--to", "staging", "--check", *root]) == EXIT_OK
    assert "in sync" in capsys.readouterr().out


def test_cli_refusal_exit_code_and_message(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--from", "dev", "--to", "prod", "--root", str(stacks)]) == EXIT_REFUSED
    assert "promote: refused: source stack 'dev' has no image digest" in capsys.readouterr().err


def test_registers_on_the_infra_dispatcher() -> None:
    import argparse

    from infra import promote as module

    parser = argparse.ArgumentParser(prog="python -m infra")
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["promote", "--from", "dev", "--to", "staging", "--check"])
    assert args.func is module.run and args.check and args.source == "dev"


def test_standalone_module_entry_point(stacks: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "infra.promote", "--digest", DIGEST_B, "--to", "prod", "--root", str(stacks)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    assert f"prod: imageDigest (unset) -> {DIGEST_B}" in proc.stdout
    assert read_digest("prod", stacks) == DIGEST_B
