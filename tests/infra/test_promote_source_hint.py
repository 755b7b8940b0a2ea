"""A promotion from a stack with no digest says how that stack gets one: dev records a build, every
other stack receives its image by promotion (scripts/build-image is never the answer there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.promote import PromotionError, promote, set_digest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stacks(tmp_path: Path) -> Path:
    for path in ROOT.glob("Pulumi.*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    for stack in ("dev", "staging"):  # the committed files may hold digests; start from none
        text = (tmp_path / f"Pulumi.{stack}.yaml").read_text()
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(
            "\n".join(
                '  purchase-classifier:imageDigest: ""'
                if line.startswith("  purchase-classifier:imageDigest:")
                else line
                for line in text.splitlines()
            )
            + "\n"
        )
    return tmp_path


def test_an_empty_staging_is_told_to_receive_a_promotion(stacks: Path) -> None:
    with pytest.raises(PromotionError) as refused:
        promote("staging", "prod", stacks, dry_run=True)
    message = str(refused.value)
    assert "python -m infra promote --from <previous stack> --to staging" in message
    assert "build-image" not in message


def test_an_empty_dev_is_told_to_record_a_build(stacks: Path) -> None:
    with pytest.raises(PromotionError, match=r"scripts/build-image --stack dev"):
        promote("dev", "staging", stacks, dry_run=True)
    set_digest("dev", "sha256:" + "ab" * 32, stacks)  # and with one, the dry run compares the files
    assert promote("dev", "staging", stacks, dry_run=True).changed
