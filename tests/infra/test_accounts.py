"""Each stack renders in its own AWS account, so a resource or grant that names another account shows.

The stacks live in three accounts (``aws:allowedAccountIds`` in each stack file); the offline render
mocks each with its own account id, so ARNs the program derives (roles, keys, the ECR repository
URL) carry it, and any account id written into a stack file must be that stack's.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.mockrun import StackRun, load_stack_config, stack_account
from tests.infra.harness import AWS_STACKS, DIGEST, cached_run, run_stack

ACCOUNT_IN_ARN = re.compile(r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")
ACCOUNT_IN_ECR_HOST = re.compile(r"\b(\d{12})\.dkr\.ecr\.")


def accounts_named(run: StackRun) -> set[str]:
    """Every account id that appears in an ARN or ECR host among the render's inputs and outputs."""
    text = json.dumps([r.inputs for r in run.resources], default=str) + json.dumps(run.outputs, default=str)
    return set(ACCOUNT_IN_ARN.findall(text)) | set(ACCOUNT_IN_ECR_HOST.findall(text))


def test_the_three_stacks_live_in_three_accounts() -> None:
    accounts = {stack: stack_account(load_stack_config(stack)) for stack in AWS_STACKS}
    assert len(set(accounts.values())) == 3, accounts


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_render_names_only_the_stacks_own_account(stack: str) -> None:
    run = cached_run(stack)
    account = stack_account(load_stack_config(stack))
    assert accounts_named(run) == {account}
    (provider,) = run.of_type("pulumi:providers:aws")
    assert json.loads(provider.inputs["allowedAccountIds"]) == [account]


def test_a_grant_to_another_accounts_role_shows_in_the_render() -> None:
    config: dict[str, Any] = load_stack_config("staging")
    cluster = dict(config["purchase-classifier:cluster"])
    dev_account = stack_account(load_stack_config("dev"))
    cluster["adminRoleArns"] = [*cluster["adminRoleArns"], f"arn:aws:iam::{dev_account}:role/ci-deployer"]
    run = run_stack("staging", overrides={"imageDigest": DIGEST, "cluster": cluster})
    assert dev_account in accounts_named(run)
    assert accounts_named(run) - {stack_account(config)} == {dev_account}
